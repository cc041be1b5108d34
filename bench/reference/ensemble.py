"""Reference for `mpdp bench ensemble`: MBPO's probabilistic ensemble in plain PyTorch on CPU.

E members computed together: weights [E, in, out] and torch.bmm, swish between 4 hidden layers,
an output layer giving mean and raw log-variance of [reward, delta obs], soft-bounded by
max_logvar (0.5) and min_logvar (-10) as MBPO does. Two workloads, Hopper sizes by default
(in 14 = obs 11 + act 3, out 12):

- train: one Adam step (lr 1e-3) on batch B per member: the members' summed Gaussian NLL
  mean((mu - y)^2 exp(-lv) + lv) plus per-layer weight decay 2.5e-5..1e-4 times half the sum of
  squared weights. Random batches are drawn before timing.
- infer: mean and variance of every member for R rows (no gradients).

Prints `train_steps_per_s=X` and `infer_rows_per_s=Y`, each the best of --repeats.
"""
import argparse
import time

import torch
import torch.nn.functional as F


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--members", type=int, default=7)
    p.add_argument("--hidden", type=int, default=200)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--d-in", type=int, default=14)
    p.add_argument("--d-out", type=int, default=12)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu", help="cpu or cuda (the side measured against a GPU build)")
    args = p.parse_args()
    torch.set_default_device(args.device)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    torch.manual_seed(0)
    e, h, di, do = args.members, args.hidden, args.d_in, args.d_out
    sizes = [di] + [h] * args.layers + [2 * do]
    params = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        bound = 1.0 / a**0.5
        w = torch.empty(e, a, b).uniform_(-bound, bound).requires_grad_()
        bias = torch.empty(e, 1, b).uniform_(-bound, bound).requires_grad_()
        params.append((w, bias))
    max_lv = torch.full((1, 1, do), 0.5)
    min_lv = torch.full((1, 1, do), -10.0)
    decay = [2.5e-5, 5e-5, 7.5e-5, 7.5e-5, 1e-4]
    opt = torch.optim.Adam([t for pair in params for t in pair], lr=1e-3)

    def forward(x):
        for i, (w, b) in enumerate(params):
            x = torch.bmm(x, w) + b
            if i < len(params) - 1:
                x = F.silu(x)
        mean, lv = x[..., :do], x[..., do:]
        lv = max_lv - F.softplus(max_lv - lv)
        lv = min_lv + F.softplus(lv - min_lv)
        return mean, lv

    batches = [(torch.randn(e, args.batch, di), torch.randn(e, args.batch, do)) for _ in range(8)]

    def step(x, y):
        mean, lv = forward(x)
        nll = ((mean - y).pow(2) * torch.exp(-lv) + lv).mean() * e
        reg = sum(decay[min(i, len(decay) - 1)] * 0.5 * w.pow(2).sum() for i, (w, _) in enumerate(params))
        loss = nll + reg
        opt.zero_grad()
        loss.backward()
        opt.step()

    for i in range(5):
        step(*batches[i % len(batches)])
    best = float("inf")
    for _ in range(args.repeats):
        sync()
        start = time.perf_counter()
        for i in range(args.steps):
            step(*batches[i % len(batches)])
        sync()
        best = min(best, time.perf_counter() - start)
    train = args.steps / best

    rows = torch.randn(args.rows, di)
    best = float("inf")
    with torch.no_grad():
        for _ in range(args.repeats):
            sync()
            start = time.perf_counter()
            x = rows.unsqueeze(0).expand(e, -1, -1).contiguous()
            mean, lv = forward(x)
            var = lv.exp()
            _ = (mean.cpu(), var.cpu())
            sync()
            best = min(best, time.perf_counter() - start)
    print(f"torch={torch.__version__} device={args.device} threads={torch.get_num_threads()}")
    print(f"train_steps_per_s={train}")
    print(f"infer_rows_per_s={args.rows / best}")


if __name__ == "__main__":
    main()
