"""Gymnasium's side of `mpdp env replay`, for the parity test.

Same arguments and output as `mpdp env replay --env TASK --init init.json --actions actions.csv
[--variant v5|mbpo]`: sets the initial state in Gymnasium's `TASK-v5` env (reset, then
set_state), replays the actions and prints `step,reward,terminated,truncated,obs_0,...`, one
row per step, ending with the step that terminated or truncated the episode.
"""
import argparse
import json
import sys

import gymnasium as gym
import numpy as np

# MBPO's observation variant in Gymnasium terms (Ant 27 dims, Humanoid 45 dims).
MBPO_KWARGS = {
    "Ant": {"include_cfrc_ext_in_observation": False},
    "Humanoid": {
        "include_cinert_in_observation": False,
        "include_cvel_in_observation": False,
        "include_qfrc_actuator_in_observation": False,
        "include_cfrc_ext_in_observation": False,
    },
}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--env", required=True)
    p.add_argument("--init", required=True)
    p.add_argument("--actions", required=True)
    p.add_argument("--variant", default="v5", choices=["v5", "mbpo"])
    args = p.parse_args()

    name = args.env.removesuffix("-v5")
    kwargs = MBPO_KWARGS.get(name, {}) if args.variant == "mbpo" else {}
    env = gym.make(f"{name}-v5", disable_env_checker=True, **kwargs)
    with open(args.init) as f:
        init = json.load(f)
    env.reset(seed=0)
    env.unwrapped.set_state(np.asarray(init["qpos"], dtype=np.float64), np.asarray(init["qvel"], dtype=np.float64))
    actions = np.loadtxt(args.actions, delimiter=",", ndmin=2, dtype=np.float64)

    out = sys.stdout
    n_obs = env.observation_space.shape[0]
    out.write("step,reward,terminated,truncated," + ",".join(f"obs_{i}" for i in range(n_obs)) + "\n")
    for step, action in enumerate(actions, start=1):
        obs, reward, terminated, truncated, _ = env.step(action)
        values = [repr(float(reward)), str(int(terminated)), str(int(truncated))]
        values += [repr(float(v)) for v in obs]
        out.write(f"{step}," + ",".join(values) + "\n")
        if terminated or truncated:
            break


if __name__ == "__main__":
    main()
