// Runs before `npm test`: makes sure the machine can give WebGPU to tests without a GPU. Needs Debian's chromium
// (headless browser for end-to-end tests, and SwiftShader's Vulkan driver) and the Vulkan loader (libvulkan1) that
// Dawn opens in Node. As root on Debian/Ubuntu it installs them; otherwise it says exactly what to install.
import { execSync } from 'node:child_process';
import { existsSync } from 'node:fs';

function hasVulkanLoader() {
  try {
    return execSync('ldconfig -p', { encoding: 'utf8' }).includes('libvulkan.so.1');
  } catch {
    return false;
  }
}

const missing = [];
if (!existsSync('/usr/bin/chromium') || !existsSync('/usr/lib/chromium/vk_swiftshader_icd.json')) missing.push('chromium');
if (!hasVulkanLoader()) missing.push('libvulkan1');

if (missing.length) {
  const command = `apt-get install -y --no-install-recommends ${missing.join(' ')}`;
  const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
  if (isRoot && existsSync('/usr/bin/apt-get')) {
    console.log(`Installing test dependencies: ${missing.join(', ')}`);
    execSync('apt-get update -qq', { stdio: 'inherit' });
    execSync(command, { stdio: 'inherit', env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
  } else {
    console.error(
      `Tests need ${missing.join(' and ')} (Debian packages): headless Chromium with SwiftShader gives WebGPU without a GPU.\n` +
        `Install them with:  sudo ${command}`,
    );
    process.exit(1);
  }
}
