// {{name}}: 1 when the environment reports success (`"success": true` in its
// info), 0 otherwise.

import { Reward, exportReward, isSuccess } from './ludus/ludus-sdk.js';

class SuccessReward extends Reward {
  info() {
    return { name: '{{name}}', version: '0.1.0', description: '1 on success, 0 otherwise.' };
  }

  score(t) {
    const success = isSuccess(t.info);
    const ended = success || t.terminated || t.truncated;
    return { reward: success ? 1 : 0, success: ended ? success : undefined, note: undefined };
  }
}

export const rewardPlugin = exportReward(SuccessReward);
