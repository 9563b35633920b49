// The agent's execution memory (agents only: the env and reward worlds do not
// import it): text values by path. `/episode/...` is cleared every episode,
// `/agent/...` persists across episodes and runs, `/user/...` is read-only.

import * as host from 'ludus:plugin/memory@0.1.3';

/** The value at `path`, or undefined. */
export function read(path) {
  return host.read(path);
}

/** Sets `path` to `value`; throws an Error for read-only scopes and malformed paths. */
export function write(path, value) {
  try {
    host.write(path, String(value));
  } catch (e) {
    throw new Error(e && e.payload !== undefined ? String(e.payload) : String(e));
  }
}

/** Removes `path`. */
export function remove(path) {
  try {
    host.delete(path);
  } catch (e) {
    throw new Error(e && e.payload !== undefined ? String(e.payload) : String(e));
  }
}

/** Paths under `prefix`, sorted. */
export function list(prefix) {
  return host.list(prefix);
}
