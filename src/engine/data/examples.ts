// Training examples, and the checks that turn one parsed JSON value into one example or into errors that point at the
// offending key or value. The rules follow the OpenAI fine-tuning formats (chat `messages`, legacy
// `prompt`/`completion`), so data that trains there trains here.
import type { DataSourceName, ErrorCode, WarningCode } from './issues.ts';
import { jsonTypeName, member, type JsonNode, type JsonObject } from './json.ts';

export type Role = 'system' | 'user' | 'assistant';
export const ROLES: readonly Role[] = ['system', 'user', 'assistant'];

export interface ChatMessage {
  role: Role;
  content: string;
  /** Assistant messages only: 0 = shown to the model but not trained on. Absent means 1. */
  weight?: 0 | 1;
}

/** Where an example sits in the user's text. */
export interface ExampleOrigin {
  source: DataSourceName;
  /** 1-based line where the example starts. */
  line: number;
  /** 0-based position among the file's examples, valid or not. */
  index: number;
}

export interface ChatExample {
  kind: 'chat';
  messages: ChatMessage[];
  origin: ExampleOrigin;
}
export interface CompletionExample {
  kind: 'completion';
  prompt: string;
  completion: string;
  origin: ExampleOrigin;
}
/** Plain text for language-model continuation; it is cut into context-sized blocks when tokenized. */
export interface TextExample {
  kind: 'text';
  text: string;
  origin: ExampleOrigin;
}
export type Example = ChatExample | CompletionExample | TextExample;
export type ExampleKind = Example['kind'];

/** Receives what the checks find; `offset` points into the whole text. */
export interface FindingSink {
  error(code: ErrorCode, message: string, offset: number): void;
  warning(code: WarningCode, message: string, offset: number): void;
}

const MESSAGE_KEYS = new Set(['role', 'content', 'weight', 'name']);

/** Which kind a JSON example looks like, from its keys alone (for format detection). */
export function jsonExampleKind(node: JsonNode): 'chat' | 'completion' | undefined {
  if (node.type !== 'object') return undefined;
  if (member(node, 'messages')) return 'chat';
  if (member(node, 'prompt') || member(node, 'completion')) return 'completion';
  return undefined;
}

/** Checks a chat example. Returns the example, or undefined when it has errors. */
export function checkChatExample(node: JsonNode, origin: ExampleOrigin, sink: FindingSink): ChatExample | undefined {
  if (node.type !== 'object') {
    sink.error('wrong-type', `an example must be a JSON object {"messages": [...]}, found ${jsonTypeName(node)}`, node.start);
    return undefined;
  }
  const messagesMember = member(node, 'messages');
  if (!messagesMember) {
    const keys = node.members.map((m) => `"${m.key}"`).join(', ');
    sink.error(
      'missing-messages',
      `a chat example needs a "messages" list of {"role", "content"} objects` + (keys ? ` (found ${keys})` : ''),
      node.start,
    );
    return undefined;
  }
  for (const other of node.members) {
    if (other.key !== 'messages') {
      sink.warning('ignored-key', ignoredKeyMessage(other.key), other.keyStart);
    }
  }
  const list = messagesMember.value;
  if (list.type !== 'array') {
    sink.error('missing-messages', `"messages" must be a list [...] of messages, found ${jsonTypeName(list)}`, list.start);
    return undefined;
  }

  let ok = true;
  const messages: ChatMessage[] = [];
  for (const item of list.items) {
    const message = checkMessage(item, sink);
    if (message) messages.push(message);
    else ok = false;
  }
  if (!ok) return undefined;
  if (!messages.some((m) => m.role === 'assistant')) {
    sink.error(
      'no-assistant-message',
      'the example has no assistant message, so there is nothing to learn to answer; add {"role": "assistant", ...}',
      list.start,
    );
    return undefined;
  }
  if (messages.every((m) => m.role !== 'assistant' || m.weight === 0)) {
    sink.warning('nothing-to-train', 'every assistant message has "weight": 0, so this example trains nothing', list.start);
  }
  return { kind: 'chat', messages, origin };
}

function checkMessage(node: JsonNode, sink: FindingSink): ChatMessage | undefined {
  if (node.type !== 'object') {
    sink.error('wrong-type', `a message must be an object {"role": ..., "content": ...}, found ${jsonTypeName(node)}`, node.start);
    return undefined;
  }
  let ok = true;
  for (const m of node.members) {
    if (!MESSAGE_KEYS.has(m.key)) {
      const hint = m.key === 'tool_calls' || m.key === 'function_call' ? ' (tool calls are not supported)' : '';
      sink.error('unrecognized-key', `unrecognized key "${m.key}" in a message; allowed: role, content, weight, name${hint}`, m.keyStart);
      ok = false;
    }
  }
  const roleMember = member(node, 'role');
  const contentMember = member(node, 'content');
  if (!roleMember) {
    sink.error('message-missing-key', 'a message is missing "role" (system, user or assistant)', node.start);
    ok = false;
  }
  if (!contentMember) {
    sink.error('message-missing-key', 'a message is missing "content"', node.start);
    ok = false;
  }
  let role: Role | undefined;
  if (roleMember) {
    const value = roleMember.value;
    if (value.type === 'string' && (ROLES as readonly string[]).includes(value.value)) role = value.value as Role;
    else {
      const shown = value.type === 'string' ? `"${value.value}"` : jsonTypeName(value);
      sink.error('unrecognized-role', `unrecognized role ${shown}; use "system", "user" or "assistant"`, value.start);
      ok = false;
    }
  }
  let content: string | undefined;
  if (contentMember) {
    const value = contentMember.value;
    if (value.type !== 'string') {
      sink.error('not-a-string', `"content" must be a string, found ${jsonTypeName(value)}`, value.start);
      ok = false;
    } else if (value.value.trim() === '') {
      sink.error('empty-content', `${role ? `the ${role}` : 'a'} message's content is empty`, value.start);
      ok = false;
    } else content = value.value;
  }
  let weight: 0 | 1 | undefined;
  const weightMember = member(node, 'weight');
  if (weightMember) {
    const value = weightMember.value;
    if (value.type !== 'number' || (value.value !== 0 && value.value !== 1)) {
      const found = value.type === 'number' ? value.value : jsonTypeName(value);
      sink.error('bad-weight', `"weight" must be 0 or 1, found ${found}`, value.start);
      ok = false;
    } else if (role !== undefined && role !== 'assistant') {
      sink.error('bad-weight', `"weight" is only allowed on assistant messages, not on a ${role} message`, weightMember.keyStart);
      ok = false;
    } else weight = value.value as 0 | 1;
  }
  if (!ok || role === undefined || content === undefined) return undefined;
  return weight === undefined ? { role, content } : { role, content, weight };
}

/** Checks a prompt/completion example. Returns the example, or undefined when it has errors. */
export function checkCompletionExample(node: JsonNode, origin: ExampleOrigin, sink: FindingSink): CompletionExample | undefined {
  if (node.type !== 'object') {
    const expected = 'an example must be a JSON object {"prompt": ..., "completion": ...}';
    sink.error('wrong-type', `${expected}, found ${jsonTypeName(node)}`, node.start);
    return undefined;
  }
  for (const other of node.members) {
    if (other.key !== 'prompt' && other.key !== 'completion') {
      sink.warning('ignored-key', ignoredKeyMessage(other.key), other.keyStart);
    }
  }
  const prompt = stringField(node, 'prompt', sink);
  const completion = stringField(node, 'completion', sink);
  if (prompt === undefined || completion === undefined) return undefined;
  if (completion.trim() === '') {
    const at = member(node, 'completion')!.value.start;
    sink.warning('empty-completion', 'the completion is empty: the model learns to answer this prompt with nothing', at);
  }
  return { kind: 'completion', prompt, completion, origin };
}

function ignoredKeyMessage(key: string): string {
  return `key "${key}" is not used for training; it is ignored here and wherever else it appears`;
}

function stringField(node: JsonObject, key: 'prompt' | 'completion', sink: FindingSink): string | undefined {
  const found = member(node, key);
  if (!found) {
    sink.error('missing-field', `the example has no "${key}"; prompt/completion examples need both`, node.start);
    return undefined;
  }
  if (found.value.type !== 'string') {
    sink.error('not-a-string', `"${key}" must be a string, found ${jsonTypeName(found.value)}`, found.value.start);
    return undefined;
  }
  return found.value.value;
}
