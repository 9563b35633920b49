// A JavaScript agent that misbehaves on purpose at step 3, chosen by its
// config `mode=`: `throw` (an error thrown deep in a helper), `loop` (never
// returns), `bomb` (allocates until memory runs out), `ok` (acts 0 always).

import { Agent, ConfigError, discrete, exportAgent, parseConfig } from './ludus/ludus-sdk.js';

const MODES = ['ok', 'throw', 'loop', 'bomb'];

function readSensor(step) {
  if (step >= 3) throw new TypeError(`sensor offline at step ${step}`);
  return 0;
}

class Hostile extends Agent {
  constructor(config) {
    super('');
    this.mode = parseConfig(config).get('mode') ?? 'ok';
    if (!MODES.includes(this.mode)) throw new ConfigError(`unknown mode \`${this.mode}\` (one of ${MODES.join(', ')})`);
  }

  info() {
    return { name: 'js-hostile-agent', version: '0.1.0', description: 'Misbehaves at step 3.' };
  }

  act(_observation, context) {
    if (context.step >= 3) {
      if (this.mode === 'throw') readSensor(context.step);
      if (this.mode === 'loop') {
        let n = 0;
        for (;;) n += 1;
      }
      if (this.mode === 'bomb') {
        const hoard = [];
        for (;;) hoard.push(new Float64Array(1 << 20));
      }
    }
    return discrete(0);
  }
}

export const agentPlugin = exportAgent(Hostile);
