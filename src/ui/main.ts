// Browser entry: mounts the Svelte app over the static "loading" message that index.html shows until scripts run.

import { mount } from 'svelte';
import App from './App.svelte';
import './styles.css';

const target = document.getElementById('app');
if (!target) throw new Error('index.html has no #app element');
target.replaceChildren();
mount(App, { target });
