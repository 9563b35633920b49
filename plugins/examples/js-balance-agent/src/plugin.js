// A balancing heuristic for CartPole-like envs as a ludus agent plugin in
// JavaScript: push towards the side the pole is falling to (angle plus a share
// of its angular velocity), with a configurable share of random actions
// (config `epsilon=0.1`, drawn from the episode's seed). Envs without a
// `state` vector get random actions. It counts its episodes in the execution
// memory at `/agent/episodes` and logs each episode's length.

import { Agent, ConfigError, Rng, discrete, exportAgent, log, parseConfig, vectorPart } from './ludus/ludus-sdk.js';
import * as memory from './ludus/memory.js';

class BalanceAgent extends Agent {
  constructor(config) {
    super('');
    this.epsilon = 0;
    for (const [key, value] of parseConfig(config)) {
      if (key !== 'epsilon') throw new ConfigError(`unknown config key \`${key}\` (known: epsilon)`);
      const e = Number(value);
      if (!(e >= 0 && e <= 1)) throw new ConfigError(`config key \`epsilon\`: \`${value}\` is not a number in [0, 1]`);
      this.epsilon = e;
    }
    this.rng = new Rng(0n);
    this.actions = 2;
  }

  info() {
    return { name: 'js-balance-agent', version: '0.1.0', description: 'Push towards the side the pole falls to.' };
  }

  beginEpisode(env, _task, seed) {
    this.rng = new Rng(seed);
    this.actions = env.actionSpace.discrete ?? 2;
  }

  act(observation, _context) {
    const state = vectorPart(observation, 'state');
    if (state === undefined || state.length < 4 || (this.epsilon > 0 && this.rng.nextFloat() < this.epsilon)) {
      return discrete(this.rng.below(Math.max(this.actions, 1)));
    }
    return discrete(state[2] + 0.5 * state[3] > 0 ? 1 : 0);
  }

  endEpisode(end) {
    const episodes = Number(memory.read('/agent/episodes') ?? '0') + 1;
    memory.write('/agent/episodes', String(episodes));
    log.info(`episode ${episodes} lasted ${end.steps} steps`);
  }
}

export const agentPlugin = exportAgent(BalanceAgent);
