// An LLM agent for the maze in JavaScript: each step it shows the model the
// grid and the task and asks for one move in a JSON schema. A model error
// (over budget, unavailable, ...) is counted in `/episode/model-errors/KIND`
// and the agent makes a fallback move, as the Python one does.

import { Agent, discrete, exportAgent, textPart } from './ludus/ludus-sdk.js';
import * as memory from './ludus/memory.js';
import { ModelCallError, chat } from './ludus/model.js';

const MOVES = ['up', 'right', 'down', 'left'];
const SCHEMA = JSON.stringify({
  type: 'object',
  properties: { move: { type: 'string', enum: MOVES } },
  required: ['move'],
});

class LlmMazeAgent extends Agent {
  constructor(_config) {
    super('');
    this.task = '';
    this.errors = new Map();
  }

  info() {
    return { name: 'js-llm-maze-agent', version: '0.1.0', description: 'Asks a language model for each maze move.' };
  }

  beginEpisode(_env, task, _seed) {
    this.task = task;
    this.errors = new Map();
  }

  act(observation, context) {
    const grid = textPart(observation, 'grid') ?? '';
    let answer;
    try {
      answer = chat(
        [
          ['system', 'You move an agent @ through a grid maze. Answer with JSON.'],
          ['user', `Task: ${this.task}\nGrid:\n${grid}\nWhich move?`],
        ],
        { temperature: 0, maxTokens: 24, responseFormat: SCHEMA },
      );
    } catch (e) {
      if (!(e instanceof ModelCallError)) throw e;
      const n = (this.errors.get(e.kind) ?? 0) + 1;
      this.errors.set(e.kind, n);
      memory.write(`/episode/model-errors/${e.kind}`, String(n));
      return discrete(context.step % 4);
    }
    try {
      const move = JSON.parse(answer.content).move;
      const i = MOVES.indexOf(move);
      if (i >= 0) return discrete(i);
    } catch {
      // an unusable answer: the fallback below
    }
    return discrete(context.step % 4);
  }
}

export const agentPlugin = exportAgent(LlmMazeAgent);
