"""PETS's planner with the true dynamics on InvertedPendulum-v5 (docs/algorithms.md, "PETS and
POPLIN", "Survival alone").

CEM over open-loop action sequences (truncated-normal samples, variance capped by the distance
to the bounds, smoothing 0.1, the solution shifted as the next call's warm start), each
sequence scored by MuJoCo itself from the env's current state: 1 per surviving step, the
episode ending at |angle| > 0.2, as the task's reward. No model, no noise: what a perfect
model would let PETS do. Prints how long the pole stayed up and how far the cart went.

    .deps/venv/bin/python scripts/pets_oracle.py POP ELITES ITERS HORIZON SEED [ACTION_COST]
"""
import sys

import gymnasium as gym
import mujoco
import numpy as np

pop, elites, iters, horizon, seed = (int(a) for a in sys.argv[1:6])
action_cost = float(sys.argv[6]) if len(sys.argv) > 6 else 0.0

env = gym.make("InvertedPendulum-v5")
obs, _ = env.reset(seed=seed)
task = env.unwrapped
model, data = task.model, task.data
scratch = mujoco.MjData(model)
rng = np.random.default_rng(seed)
scale = float(env.action_space.high[0])


def score(actions):
    """The return of `actions` (normalised to [-1, 1]) from the env's current state."""
    scratch.qpos[:] = data.qpos
    scratch.qvel[:] = data.qvel
    scratch.act[:] = data.act
    scratch.time = data.time
    total = 0.0
    for a in actions:
        scratch.ctrl[:] = scale * a
        mujoco.mj_step(model, scratch, nstep=task.frame_skip)
        if abs(scratch.qpos[1]) > 0.2 or not np.isfinite(scratch.qpos).all():
            break
        total += 1.0 - action_cost * a * a
    return total


mean = np.zeros(horizon)
xs = []
while True:
    var = np.full(horizon, 0.25)
    for _ in range(iters):
        capped = np.minimum(np.minimum((mean + 1) / 2, (1 - mean) / 2) ** 2, var)
        z = rng.standard_normal((pop, horizon))
        while (out := np.abs(z) > 2).any():
            z[out] = rng.standard_normal(out.sum())
        candidates = mean + np.sqrt(capped) * z
        returns = np.array([score(c) for c in candidates])
        best = candidates[np.argsort(-returns, kind="stable")[:elites]]
        mean = 0.1 * mean + 0.9 * best.mean(0)
        var = 0.1 * var + 0.9 * best.var(0)
    obs, _, terminated, truncated, _ = env.step(np.array([scale * mean[0]], dtype=np.float32))
    xs.append(obs[0])
    mean = np.append(mean[1:], 0.0)
    if terminated or truncated:
        break
print(
    f"CEM {pop}/{elites}/{iters}, horizon {horizon}, seed {seed}, action cost {action_cost}: "
    f"{len(xs)} steps, terminated={terminated}, max |cart x| {np.max(np.abs(xs)):.3f}"
)
