"""Reference for `mpdp bench cem`: one PETS planning call in plain PyTorch.

CEM over action sequences (population P, E elites, I iterations, alpha 0.1, samples from a
normal truncated at +-2 sigma with the variance capped by the distance to the bounds [-1, 1]),
each candidate scored by N particles through a probabilistic ensemble with trajectory sampling
TS-inf (particle p of a candidate keeps elite p mod K): 7 members x 4 hidden layers of 200
swish, the 5 elites predicting, inputs standardised, outputs [reward, delta obs] sampled from
each member's Gaussian (log-variance soft-bounded as MBPO does). Rewards stop after Hopper's
termination function fires. Hopper sizes by default (obs 11, act 3), horizon 30.

Prints `plans_per_s=X` (the best of --repeats single calls) and the torch version line.
"""
import argparse
import time

import torch
import torch.nn.functional as F


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--obs", type=int, default=11)
    p.add_argument("--act", type=int, default=3)
    p.add_argument("--members", type=int, default=7)
    p.add_argument("--elites", type=int, default=5)
    p.add_argument("--hidden", type=int, default=200)
    p.add_argument("--population", type=int, default=500)
    p.add_argument("--cem-elites", type=int, default=50)
    p.add_argument("--iterations", type=int, default=5)
    p.add_argument("--particles", type=int, default=20)
    p.add_argument("--horizon", type=int, default=30)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    torch.set_default_device(args.device)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    torch.manual_seed(0)
    o, a, k = args.obs, args.act, args.elites
    do = 1 + o
    sizes = [o + a] + [args.hidden] * 4 + [2 * do]
    layers = []
    for i, j in zip(sizes[:-1], sizes[1:]):
        bound = 1.0 / i**0.5
        w = torch.empty(args.members, i, j).uniform_(-bound, bound)[:k].contiguous()
        b = torch.empty(args.members, 1, j).uniform_(-bound, bound)[:k].contiguous()
        layers.append((w, b))
    max_lv = torch.full((1, 1, do), 0.5)
    min_lv = torch.full((1, 1, do), -10.0)
    in_mean = torch.randn(1, 1, o + a) * 0.1
    in_std = torch.rand(1, 1, o + a) + 0.5

    def predict(x):
        x = (x - in_mean) / in_std
        for n, (w, b) in enumerate(layers):
            x = torch.baddbmm(b, x, w)
            if n < len(layers) - 1:
                x = F.silu(x)
        mean, lv = x[..., :do], x[..., do:]
        lv = max_lv - F.softplus(max_lv - lv)
        lv = min_lv + F.softplus(lv - min_lv)
        return mean, lv

    def hopper_done(s):
        z, angle = s[..., 0], s[..., 1]
        healthy = torch.isfinite(s).all(-1) & (s[..., 1:].abs() < 100).all(-1) & (z > 0.7) & (angle.abs() < 0.2)
        return ~healthy

    def returns(obs, seqs):
        # seqs [C, H, A]; particles per elite: N / K, laid out [K, C * N / K].
        c = seqs.shape[0]
        per = args.particles // k
        s = obs.expand(k, c * per, o).contiguous()
        total = torch.zeros(k, c * per)
        alive = torch.ones(k, c * per, dtype=torch.bool)
        for t in range(args.horizon):
            act = seqs[:, t, :].repeat_interleave(per, 0).unsqueeze(0).expand(k, -1, -1)
            mean, lv = predict(torch.cat([s, act], -1))
            y = mean + torch.exp(0.5 * lv) * torch.randn_like(mean)
            s = s + y[..., 1:]
            total += torch.where(alive, y[..., 0], torch.zeros(()))
            alive &= ~hopper_done(s)
        total = torch.nan_to_num(total, nan=-1e6)
        return total.reshape(k, c, per).permute(1, 0, 2).reshape(c, -1).mean(-1)

    def plan(obs):
        h = args.horizon
        mean = torch.zeros(h, a)
        var = torch.full((h, a), 0.25)
        for _ in range(args.iterations):
            if var.max() <= 1e-3:
                break
            room = torch.minimum(mean + 1, 1 - mean) / 2
            std = torch.minimum(var, room.pow(2)).sqrt()
            z = torch.nn.init.trunc_normal_(torch.empty(args.population, h, a), 0.0, 1.0, -2.0, 2.0)
            samples = mean + std * z
            r = returns(obs, samples)
            elite = samples[torch.topk(r, args.cem_elites).indices]
            mean = 0.1 * mean + 0.9 * elite.mean(0)
            var = 0.1 * var + 0.9 * elite.var(0, unbiased=False)
        return mean

    obs = torch.randn(1, 1, o) * 0.1
    obs[..., 0] = 1.25
    with torch.no_grad():
        plan(obs)
        best = float("inf")
        for _ in range(args.repeats):
            sync()
            start = time.perf_counter()
            _ = plan(obs).cpu()
            sync()
            best = min(best, time.perf_counter() - start)
    print(f"torch={torch.__version__} device={args.device} threads={torch.get_num_threads()}")
    print(f"plans_per_s={1.0 / best}")


if __name__ == "__main__":
    main()
