// Calls to language models through the host (agents and reward plugins;
// contract 0.1.3), with the same semantics as the Rust SDK's `model::chat`:
// the host records every call with its frame, counts it against the
// episode's budgets, and on a replay answers it from the recording.
import { chat as hostChat, envTools as hostEnvTools } from 'ludus:plugin/model@0.1.3';

// A chat message of one text part.
export function message(role, text) {
  return { role, content: [{ tag: 'text', val: text }], toolCalls: [], toolCallId: undefined };
}

// A model call without an answer: `kind` is one of `budget-exceeded`,
// `unknown-endpoint`, `unavailable`, `bad-request`, `timeout`.
export class ModelCallError extends Error {
  constructor(kind, message) {
    super(`${kind}: ${message}`);
    this.kind = kind;
    this.detail = message;
  }
}

// Sends `messages` (`message(role, text)` values or `[role, text]` pairs) to
// the endpoint; returns the response (`content`, `toolCalls`, `finishReason`,
// `promptTokens`, `completionTokens`, `model`, `tokens`).
export function chat(messages, options = {}) {
  const request = {
    endpoint: options.endpoint ?? 'default',
    messages: messages.map((m) => (Array.isArray(m) ? message(m[0], m[1]) : m)),
    tools: options.tools ?? [],
    responseFormat: options.responseFormat,
    temperature: options.temperature,
    topP: options.topP,
    maxTokens: options.maxTokens,
    stop: options.stop ?? [],
    seed: options.seed === undefined ? undefined : BigInt(options.seed),
    logprobs: options.logprobs ?? false,
  };
  try {
    return hostChat(request);
  } catch (e) {
    const payload = e && e.payload;
    if (payload && typeof payload.tag === 'string') {
      throw new ModelCallError(payload.tag, String(payload.val));
    }
    throw e;
  }
}

// The tools the episode's environment offers (empty for most): pass them as
// `options.tools`, and act with a call the model makes through
// `toolCallAction(call)`.
export function envTools() {
  return hostEnvTools();
}

// The action that calls `call` (`{ id, name, arguments }`): `type-text`
// holding `{"tool_call": {...}}`, as the Rust SDK writes it.
export function toolCallAction(call) {
  let args;
  try {
    args = JSON.parse(call.arguments);
  } catch {
    args = call.arguments;
  }
  return { tag: 'type-text', val: JSON.stringify({ tool_call: { id: call.id, name: call.name, arguments: args } }) };
}
