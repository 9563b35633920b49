// {{name}}: a corridor. The agent starts somewhere left of the goal and walks
// (action 0 left, 1 right); reaching the goal ends the episode as a success.
// Observation: one vector part `state` = [position, goal].

import { Env, Rng, discreteActionSpace, exportEnv, log, successInfo, vectorObservation, vectorSpace } from './ludus/ludus-sdk.js';

const LENGTH = 8;

class Corridor extends Env {
  constructor(config) {
    super(config); // takes no config: rejects any key
    this.position = 0;
  }

  info() {
    return {
      name: '{{name}}',
      version: '0.1.0',
      description: 'Walk right to the goal.',
      observationSpace: [vectorSpace('state', [0, 0], [LENGTH, LENGTH])],
      actionSpace: discreteActionSpace(2),
      maxSteps: 100,
      vectorSize: 2,
    };
  }

  reset(seed) {
    this.position = new Rng(seed).below(LENGTH / 2);
    return { observation: this.observation(), task: 'Reach the goal.', info: '{}' };
  }

  step(action) {
    if (action.tag === 'discrete' && action.val === 1) this.position += 1;
    if (action.tag === 'discrete' && action.val === 0) this.position = Math.max(0, this.position - 1);
    const done = this.position >= LENGTH;
    log.debug(`position ${this.position}`);
    return { observation: this.observation(), reward: done ? 1 : -0.01, terminated: done, truncated: false, info: successInfo(done) };
  }

  observation() {
    return vectorObservation('state', [this.position, LENGTH]);
  }
}

export const envPlugin = exportEnv(Corridor);
