"""PPO on a ludus env from Python, through `ludus.make_vec` (one file,
torch only, in the style of CleanRL's `ppo.py`).

    python python/examples/ppo_cartpole.py --record eval.db
    ludus debug eval.db --episode 1

Trains until the last 20 training episodes average `--target`, then plays
`--eval` greedy episodes through `ludus.make(record=...)`, so they open in
`ludus debug` and the IDE. Prints one line per phase; exits 1 when the
target is not reached within `--total-steps`.
"""

import argparse
import sys
import time

import numpy as np
import torch
from torch import nn
from torch.distributions import Categorical

import ludus


def layer(n_in, n_out, std=np.sqrt(2)):
    linear = nn.Linear(n_in, n_out)
    nn.init.orthogonal_(linear.weight, std)
    nn.init.constant_(linear.bias, 0.0)
    return linear


class Agent(nn.Module):
    def __init__(self, n_obs, n_actions):
        super().__init__()
        self.critic = nn.Sequential(
            layer(n_obs, 64), nn.Tanh(), layer(64, 64), nn.Tanh(), layer(64, 1, 1.0)
        )
        self.actor = nn.Sequential(
            layer(n_obs, 64), nn.Tanh(), layer(64, 64), nn.Tanh(), layer(64, n_actions, 0.01)
        )


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--env", default=None, help="an env plugin (.wasm); default: the CartPole example")
    p.add_argument("--num-envs", type=int, default=8)
    p.add_argument("--steps", type=int, default=128, help="steps per env per update")
    p.add_argument("--total-steps", type=int, default=400_000)
    p.add_argument("--target", type=float, default=475.0)
    p.add_argument("--lr", type=float, default=2.5e-3)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--eval", type=int, default=10)
    p.add_argument("--record", default=None, help="record the greedy episodes into this .db")
    a = p.parse_args()
    torch.manual_seed(a.seed)
    torch.set_num_threads(1)
    env = a.env or ludus.example("CartPole")
    envs = ludus.make_vec(env, num_envs=a.num_envs)
    n_obs = envs.single_observation_space.shape[0]
    agent = Agent(n_obs, envs.single_action_space.n)
    optimizer = torch.optim.Adam(agent.parameters(), lr=a.lr, eps=1e-5)
    n, s = a.num_envs, a.steps
    obs_buf = torch.zeros((s, n, n_obs))
    act_buf = torch.zeros((s, n), dtype=torch.long)
    logp_buf, rew_buf, done_buf, val_buf = (torch.zeros((s, n)) for _ in range(4))
    obs, _ = envs.reset(seed=a.seed)
    obs = torch.from_numpy(obs)
    done = torch.zeros(n)
    running = np.zeros(n)
    returns = []
    steps, updates = 0, a.total_steps // (n * s)
    started = time.perf_counter()
    reached = False
    for update in range(updates):
        optimizer.param_groups[0]["lr"] = a.lr * (1.0 - update / updates)
        for t in range(s):
            obs_buf[t], done_buf[t] = obs, done
            with torch.no_grad():
                dist = Categorical(logits=agent.actor(obs))
                action = dist.sample()
                logp_buf[t], val_buf[t] = dist.log_prob(action), agent.critic(obs).squeeze(-1)
            act_buf[t] = action
            # Autoreset in the same step: an ended copy's next observation
            # is its new episode's first.
            nxt, reward, terminated, truncated, _ = envs.step(action.numpy())
            ended = terminated | truncated
            running += reward
            returns.extend(running[ended].tolist())
            running[ended] = 0.0
            rew_buf[t] = torch.from_numpy(reward).float()
            obs, done = torch.from_numpy(nxt), torch.from_numpy(ended).float()
        steps += n * s
        with torch.no_grad():
            next_value = agent.critic(obs).squeeze(-1)
            adv = torch.zeros_like(rew_buf)
            last = torch.zeros(n)
            for t in reversed(range(s)):
                nonterminal = 1.0 - (done if t == s - 1 else done_buf[t + 1])
                value_next = next_value if t == s - 1 else val_buf[t + 1]
                delta = rew_buf[t] + 0.99 * value_next * nonterminal - val_buf[t]
                last = delta + 0.99 * 0.95 * nonterminal * last
                adv[t] = last
            ret = adv + val_buf
        b_obs, b_act, b_logp = obs_buf.reshape(-1, n_obs), act_buf.reshape(-1), logp_buf.reshape(-1)
        b_adv, b_ret = adv.reshape(-1), ret.reshape(-1)
        batch = n * s
        for _ in range(4):
            order = torch.randperm(batch)
            for mb in order.split(batch // 4):
                dist = Categorical(logits=agent.actor(b_obs[mb]))
                ratio = (dist.log_prob(b_act[mb]) - b_logp[mb]).exp()
                m_adv = (b_adv[mb] - b_adv[mb].mean()) / (b_adv[mb].std() + 1e-8)
                pg = torch.max(-m_adv * ratio, -m_adv * ratio.clamp(0.8, 1.2)).mean()
                v_loss = 0.5 * ((agent.critic(b_obs[mb]).squeeze(-1) - b_ret[mb]) ** 2).mean()
                loss = pg - 0.01 * dist.entropy().mean() + 0.5 * v_loss
                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(agent.parameters(), 0.5)
                optimizer.step()
        if len(returns) >= 20 and np.mean(returns[-20:]) >= a.target:
            reached = True
            break
    recent = float(np.mean(returns[-20:])) if returns else 0.0
    print(
        f"trained {steps} steps in {time.perf_counter() - started:.1f} s: "
        f"mean return of the last 20 episodes {recent:.1f}"
    )
    if not reached:
        print(f"target {a.target} not reached", file=sys.stderr)
        return 1
    single = ludus.make(env, record=a.record)
    greedy = []
    for k in range(a.eval):
        o, _ = single.reset(seed=1000 + k)
        total, over = 0.0, False
        while not over:
            with torch.no_grad():
                action = int(agent.actor(torch.from_numpy(o)).argmax())
            o, r, terminated, truncated, _ = single.step(action)
            total += r
            over = terminated or truncated
        greedy.append(total)
    single.close()
    print(f"greedy mean return over {a.eval} episodes {np.mean(greedy):.1f}")
    if a.record:
        print(f"recorded run {single.run_id} into {a.record}")
    return 0 if np.mean(greedy) >= a.target else 1


if __name__ == "__main__":
    sys.exit(main())
