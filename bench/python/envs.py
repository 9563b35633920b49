"""CartPole steps per second from Python: ludus against gymnasium (and
EnvPool where it is installed), one env per call and batched.

    python bench/python/envs.py [--steps N] [--num-envs 8,64,256] [--rounds 3]

Needs the `ludus` package (scripts/build-wheel.sh, or maturin develop
--release) and gymnasium; EnvPool is optional (`pip install envpool`).
Actions are drawn beforehand; every env runs on this one thread. Prints one
line per configuration (best of `--rounds`) and the ratios.
"""

import argparse
import time

import numpy as np

import gymnasium
from gymnasium.envs.classic_control import CartPoleEnv
from gymnasium.envs.classic_control.cartpole import CartPoleVectorEnv

import ludus


def one_per_call(env, actions):
    env.reset(seed=0)
    started = time.perf_counter()
    for a in actions:
        _, _, terminated, truncated, _ = env.step(a)
        if terminated or truncated:
            env.reset()
    return len(actions) / (time.perf_counter() - started)


def batched(env, actions, num_envs):
    env.reset(seed=0)
    started = time.perf_counter()
    for a in actions:
        env.step(a)
    return len(actions) * num_envs / (time.perf_counter() - started)


def envpool_batched(actions, num_envs):
    try:
        import envpool
    except ImportError:
        return None
    env = envpool.make("CartPole-v1", env_type="gymnasium", num_envs=num_envs, batch_size=num_envs, num_threads=1, seed=0)
    env.reset()
    ids = np.arange(num_envs, dtype=np.int32)
    started = time.perf_counter()
    for a in actions:
        env.step(a, ids)
    return len(actions) * num_envs / (time.perf_counter() - started)


def best(rounds, f):
    return max(f() for _ in range(rounds))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=200_000)
    p.add_argument("--num-envs", default="8,64,256")
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    rng = np.random.default_rng(0)
    single = rng.integers(0, 2, size=a.steps).tolist()
    cart = ludus.example("CartPole")
    ours = best(a.rounds, lambda: one_per_call(ludus.make(cart), single))
    bare = best(a.rounds, lambda: one_per_call(CartPoleEnv(), single))
    made = best(a.rounds, lambda: one_per_call(gymnasium.make("CartPole-v1"), single))
    print(f"one env per call: ludus.make {ours:,.0f} steps/s; gymnasium CartPoleEnv {bare:,.0f}; "
          f"gymnasium.make('CartPole-v1') {made:,.0f}; ludus x{ours / bare:.2f} bare, x{ours / made:.2f} made")
    for n in (int(v) for v in a.num_envs.split(",")):
        calls = max(a.steps // n, 200)
        actions = rng.integers(0, 2, size=(calls, n))
        v = best(a.rounds, lambda: batched(ludus.make_vec(cart, num_envs=n), actions, n))
        g = best(a.rounds, lambda: batched(CartPoleVectorEnv(num_envs=n), actions, n))
        e = envpool_batched(actions.astype(np.int32), n)
        e = None if e is None else max([e] + [envpool_batched(actions.astype(np.int32), n) for _ in range(a.rounds - 1)])
        pool = "EnvPool not installed" if e is None else f"EnvPool (1 thread) {e:,.0f}, ludus x{v / e:.2f}"
        print(f"{n} envs: ludus.make_vec {v:,.0f} steps/s; gymnasium CartPoleVectorEnv {g:,.0f} "
              f"(ludus x{v / g:.2f}); {pool}")


if __name__ == "__main__":
    main()
