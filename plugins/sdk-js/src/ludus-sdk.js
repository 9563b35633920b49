// The ludus plugin SDK for JavaScript.
//
// Write an environment, an agent or a reward function as a class, then export
// it with one call, the way the Rust SDK's macros do:
//
//     import { Env, exportEnv } from './ludus/ludus-sdk.js';
//     class CartPole extends Env { info() {...} reset(seed) {...} step(action) {...} }
//     export const envPlugin = exportEnv(CartPole);
//
// (`agentPlugin = exportAgent(Cls)`, `rewardPlugin = exportReward(Cls)`.)
// `ludus build PATH` turns the project into a WebAssembly component with
// componentize-js. Values follow componentize-js's mapping of the contract:
// records are objects with camelCase fields, variants are `{ tag, val }`,
// `u64` is a BigInt, options are the value or `undefined`.
//
// Errors: a `ConfigError` thrown by the constructor rejects the config (the
// host reports it as a load error naming the plugin); any other exception ends
// the episode as `crashed` with the error and its stack in the message.

import { log as hostLog } from 'ludus:plugin/log@0.1.3';

/** Throw from a constructor to reject a config string. */
export class ConfigError extends Error {}

// ------------------------------------------------------------------ helpers

/** Actions 0..n. */
export function discreteActionSpace(n) {
  return { discrete: n, continuous: undefined, pointer: undefined, text: undefined, keys: undefined, element: false };
}

/** Continuous vector actions within the box [low, high]. */
export function continuousActionSpace(low, high) {
  return {
    discrete: undefined,
    continuous: { shape: [low.length], low, high },
    pointer: undefined,
    text: undefined,
    keys: undefined,
    element: false,
  };
}

/** A named real-valued vector part of an observation space. */
export function vectorSpace(name, low, high) {
  return { name, space: { tag: 'box', val: { shape: [low.length], low, high } } };
}

/** A one-part observation holding a vector. */
export function vectorObservation(name, values) {
  return [{ name, value: { tag: 'vector', val: values } }];
}

/** The value (`{ tag, val }`) of the part called `name`, or undefined. */
export function part(observation, name) {
  for (const p of observation) {
    if (p.name === name) return p.value;
  }
  return undefined;
}

/** The vector part called `name` (an array-like of numbers), or undefined. */
export function vectorPart(observation, name) {
  const v = part(observation, name);
  return v && v.tag === 'vector' ? v.val : undefined;
}

/** The text part called `name`, or undefined. */
export function textPart(observation, name) {
  const v = part(observation, name);
  return v && v.tag === 'text' ? v.val : undefined;
}

/** The discrete action `n`. */
export function discrete(n) {
  return { tag: 'discrete', val: n };
}

export function noop() {
  return { tag: 'noop' };
}

/** Parses `key=value,key=value` (spaces ignored) into a Map; throws ConfigError. */
export function parseConfig(config) {
  const out = new Map();
  for (let entry of config.replaceAll(';', ',').split(',')) {
    entry = entry.trim();
    if (!entry) continue;
    const eq = entry.indexOf('=');
    if (eq < 0) throw new ConfigError(`config entry \`${entry}\` is not of the form key=value`);
    out.set(entry.slice(0, eq).trim(), entry.slice(eq + 1).trim());
  }
  return out;
}

/** `{"success":true}` or `{}`. */
export function successInfo(success) {
  return success ? '{"success":true}' : '{}';
}

/** Whether an info JSON text says `"success": true`. */
export function isSuccess(info) {
  return info.replace(/\s/g, '').includes('"success":true');
}

const MASK = (1n << 64n) - 1n;

/**
 * SplitMix64, bit for bit the Rust SDK's `Rng`: seed it from the seed the host
 * gives you (a BigInt), never from a clock.
 */
export class Rng {
  constructor(seed) {
    this.state = BigInt(seed) & MASK;
  }
  /** The next 64 random bits, as a BigInt. */
  nextU64() {
    this.state = (this.state + 0x9e3779b97f4a7c15n) & MASK;
    let z = this.state;
    z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & MASK;
    z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & MASK;
    return z ^ (z >> 31n);
  }
  /** Uniform in [0, 1). */
  nextFloat() {
    return Number(this.nextU64() >> 11n) / 9007199254740992;
  }
  uniform(low, high) {
    return low + (high - low) * this.nextFloat();
  }
  /** Uniform in 0..n (n > 0). */
  below(n) {
    return Number(((this.nextU64() >> 32n) * BigInt(n)) >> 32n);
  }
}

/** The seed of a batched copy's next episode (as the Rust SDK derives it). */
export function nextSeed(seed) {
  return new Rng(BigInt(seed) ^ 0xa0761d6478bd642fn).nextU64();
}

/** Log lines, captured by the host with the frame they are written in. */
export const log = {
  trace: (message) => hostLog('trace', String(message)),
  debug: (message) => hostLog('debug', String(message)),
  info: (message) => hostLog('info', String(message)),
  warn: (message) => hostLog('warn', String(message)),
  error: (message) => hostLog('error', String(message)),
};

// ------------------------------------------------------------- plugin bases

function rejectConfig(self, config) {
  if (parseConfig(config).size > 0) {
    throw new ConfigError(`${self.constructor.name} takes no config (got \`${config}\`)`);
  }
}

/** An environment: implement `constructor(config)`, `info()`, `reset(seed)`, `step(action)`. */
export class Env {
  constructor(config) {
    rejectConfig(this, config);
  }
}

/** An agent: implement `constructor(config)`, `info()`, `act(observation, context)`. */
export class Agent {
  constructor(config) {
    rejectConfig(this, config);
  }
  beginEpisode(_env, _task, _seed) {}
  endEpisode(_end) {}
}

/** A reward function: implement `constructor(config)`, `info()`, `score(transition)`. */
export class Reward {
  constructor(config) {
    rejectConfig(this, config);
  }
}

function construct(Cls, config) {
  try {
    return new Cls(config);
  } catch (e) {
    if (e instanceof ConfigError) throw String(e.message);
    throw e;
  }
}

/**
 * Reports an exception with its stack on stderr as one line (the host puts the
 * last lines of stderr in the crash message) and returns what to throw so the
 * call traps: a short string, so the runtime's own report of it stays short.
 */
function report(call, e) {
  const text = e && e.stack ? `${e}\n${e.stack}` : String(e);
  console.error(`JavaScript error in \`${call}\`: ${text.trim().split('\n').map((l) => l.trim()).join(' / ')}`);
  return `uncaught error in \`${call}\` (reported above)`;
}

function guarded(call, f) {
  try {
    return f();
  } catch (e) {
    throw report(call, e);
  }
}

function pushVector(out, observation, size) {
  let n = 0;
  for (const p of observation) {
    if (p.value.tag !== 'vector') continue;
    for (const x of p.value.val) {
      if (n < size) out.push(x);
      n += 1;
    }
  }
  // Keep the layout fixed even if an observation is malformed.
  for (; n < size; n++) out.push(0);
}

/** The object componentize-js exports for the env world: `export const envPlugin = exportEnv(Cls)`. */
export function exportEnv(Cls) {
  let env, info, config = '';
  let batch = [];
  const vectorSize = () => {
    if (info === undefined) throw 'the host called batch-reset before `init`';
    if (info.vectorSize <= 0) {
      throw `environment \`${info.name}\` has no single-vector observation, so it cannot be batched`;
    }
    return info.vectorSize;
  };
  return {
    init(cfg) {
      let e;
      try {
        e = construct(Cls, cfg);
      } catch (err) {
        if (typeof err === 'string') throw err;
        throw report('init', err);
      }
      const i = guarded('init', () => e.info());
      env = e;
      info = i;
      config = cfg;
      return i;
    },
    reset(seed) {
      return guarded('reset', () => env.reset(seed));
    },
    step(action) {
      return guarded('step', () => env.step(action));
    },
    batchReset(seeds) {
      const size = vectorSize();
      const out = [];
      batch = [];
      for (const seed of seeds) {
        const e = guarded('batch-reset', () => construct(Cls, config));
        const r = guarded('batch-reset', () => e.reset(seed));
        pushVector(out, r.observation, size);
        batch.push({ env: e, seed, steps: 0 });
      }
      return new Float32Array(out);
    },
    batchStep(actions) {
      const size = vectorSize();
      const space = info.actionSpace;
      const isDiscrete = space.discrete !== undefined;
      const width = !isDiscrete && space.continuous ? Math.max(1, space.continuous.low.length) : 1;
      if (actions.length !== batch.length * width) {
        throw `batch-step got ${actions.length} action values for ${batch.length} copies of width ${width}`;
      }
      const observations = [];
      const rewards = [];
      const flags = new Uint8Array(batch.length);
      batch.forEach((copy, i) => {
        const action = isDiscrete
          ? { tag: 'discrete', val: Math.trunc(Math.max(actions[i], 0)) }
          : { tag: 'continuous', val: Array.from(actions.slice(i * width, (i + 1) * width)) };
        const s = guarded('batch-step', () => copy.env.step(action));
        copy.steps += 1;
        const truncated = s.truncated || (info.maxSteps > 0 && copy.steps >= info.maxSteps);
        rewards.push(s.reward);
        flags[i] = (s.terminated ? 1 : 0) | (truncated ? 2 : 0);
        if (s.terminated || truncated) {
          copy.seed = nextSeed(copy.seed);
          copy.steps = 0;
          pushVector(observations, guarded('batch-step', () => copy.env.reset(copy.seed)).observation, size);
        } else {
          pushVector(observations, s.observation, size);
        }
      });
      return { observations: new Float32Array(observations), rewards: new Float32Array(rewards), flags };
    },
  };
}

/** The object componentize-js exports for the agent world: `export const agentPlugin = exportAgent(Cls)`. */
export function exportAgent(Cls) {
  let agent;
  return {
    init(cfg) {
      let a;
      try {
        a = construct(Cls, cfg);
      } catch (err) {
        if (typeof err === 'string') throw err;
        throw report('init', err);
      }
      const i = guarded('init', () => a.info());
      agent = a;
      return i;
    },
    beginEpisode(env, task, seed) {
      guarded('begin-episode', () => agent.beginEpisode(env, task, seed));
    },
    act(observation, context) {
      return guarded('act', () => agent.act(observation, context));
    },
    endEpisode(end) {
      guarded('end-episode', () => agent.endEpisode(end));
    },
  };
}

/** The object componentize-js exports for the reward world: `export const rewardPlugin = exportReward(Cls)`. */
export function exportReward(Cls) {
  let reward;
  return {
    init(cfg) {
      let r;
      try {
        r = construct(Cls, cfg);
      } catch (err) {
        if (typeof err === 'string') throw err;
        throw report('init', err);
      }
      const i = guarded('init', () => r.info());
      reward = r;
      return i;
    },
    score(transition) {
      return guarded('score', () => reward.score(transition));
    },
  };
}
