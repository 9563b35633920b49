// {{name}}: acts uniformly at random among the environment's discrete
// actions, from the seed the host passes at each episode start, and counts its
// episodes in the execution memory (`/agent/episodes`).

import { Agent, Rng, discrete, exportAgent, log } from './ludus/ludus-sdk.js';
import * as memory from './ludus/memory.js';

class RandomAgent extends Agent {
  constructor(config) {
    super(config); // takes no config: rejects any key
    this.rng = new Rng(0n);
    this.actions = 2;
  }

  info() {
    return { name: '{{name}}', version: '0.1.0', description: 'Uniformly random discrete actions.' };
  }

  beginEpisode(env, _task, seed) {
    this.rng = new Rng(seed);
    this.actions = Math.max(env.actionSpace.discrete ?? 2, 1);
  }

  act(_observation, _context) {
    return discrete(this.rng.below(this.actions));
  }

  endEpisode(end) {
    const n = Number(memory.read('/agent/episodes') ?? '0') + 1;
    memory.write('/agent/episodes', String(n));
    log.info(`episode ${n} lasted ${end.steps} steps`);
  }
}

export const agentPlugin = exportAgent(RandomAgent);
