"""Reference for `mpdp bench env`: Gymnasium's env.step throughput on a MuJoCo v5 task.

Uniform random actions, generated before timing; the env resets when an episode ends.
Prints `steps_per_s=X`, the best of --repeats measurements.
"""
import argparse
import time

import gymnasium as gym
import numpy as np


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--env", required=True)
    p.add_argument("--steps", type=int, default=20000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    env = gym.make(args.env)
    space = env.action_space
    rng = np.random.default_rng(args.seed)
    actions = rng.uniform(space.low, space.high, size=(args.steps, space.shape[0]))
    best = float("inf")
    for _ in range(args.repeats):
        env.reset(seed=args.seed)
        start = time.perf_counter()
        for a in actions:
            _, _, terminated, truncated, _ = env.step(a)
            if terminated or truncated:
                env.reset()
        best = min(best, time.perf_counter() - start)
    print(f"steps_per_s={args.steps / best}")


if __name__ == "__main__":
    main()
