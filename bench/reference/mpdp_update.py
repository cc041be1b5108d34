"""Reference for `mpdp bench mpdp`: one MPDP update in plain PyTorch on CPU.

The same update as mpdp's (src/agent/mpdp.rs over src/model/planner.rs), Hopper sizes by
default (obs 11, act 3), batch B = 256 real transitions, H = 5 planning steps:

1. Policy evaluation as in SAC v2: twin Q (2x256 ReLU) regressed on
   y = r + gamma (1 - d) (min Qtarget(s', a') - alpha log pi_0(a'|s')), a' ~ pi_0; Adam 3e-4.
2. Extended policy improvement through the frozen ensemble (5 elites of 4x200 swish with
   bounded log-variance, input normaliser): for t < H-1, a_t ~ pi_t (tanh-Gaussian 2x256 ReLU,
   log-std squashed into [-5, 2]), every elite predicts, u_t = sum_i KL(N_i || N_-i) (moment
   matched), one elite per row sampled with reparameterised noise; rows accumulate
   g (r - alpha log pi - beta u) while alive (u < u_T, not terminal); at t = H-1 the tail
   g (min Q(s, a) - alpha log pi). u_T is infinite and there is no termination, so every row
   plans all H steps, as in the mpdp side of the benchmark.
3. One Adam step (3e-4) on all pi_t with the global gradient norm clipped to 10; SAC's
   temperature step on log pi_0; Polyak tau = 0.005 on the Q targets.

Prints `updates_per_s=X`, the best of --repeats.
"""
import argparse
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def mlp(sizes):
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class Policy(nn.Module):
    def __init__(self, obs, act, hidden):
        super().__init__()
        self.trunk = mlp([obs, hidden, hidden])
        self.mean = nn.Linear(hidden, act)
        self.log_std = nn.Linear(hidden, act)

    def sample(self, s):
        h = F.relu(self.trunk(s))
        mean = self.mean(h)
        log_std = -5.0 + 0.5 * 7.0 * (torch.tanh(self.log_std(h)) + 1.0)
        eps = torch.randn_like(mean)
        u = mean + log_std.exp() * eps
        log_det = 2.0 * (torch.log(torch.tensor(2.0)) - u - F.softplus(-2.0 * u))
        log_normal = -0.5 * eps.pow(2) - log_std - 0.9189385332046727
        return torch.tanh(u), (log_normal - log_det).sum(1, keepdim=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--obs", type=int, default=11)
    p.add_argument("--act", type=int, default=3)
    p.add_argument("--horizon", type=int, default=5)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--elites", type=int, default=5)
    p.add_argument("--model-hidden", type=int, default=200)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--updates", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu", help="cpu or cuda (the side measured against a GPU build)")
    args = p.parse_args()
    torch.set_default_device(args.device)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    torch.manual_seed(0)
    o, a, n, k, hid = args.obs, args.act, args.batch, args.elites, args.hidden
    gamma, tau, beta, alpha_lr, lr, clip = 0.99, 0.005, 0.5, 3e-4, 3e-4, 10.0
    u_threshold = float("inf")

    policies = nn.ModuleList([Policy(o, a, hid) for _ in range(args.horizon)])
    q1, q2 = mlp([o + a, hid, hid, 1]), mlp([o + a, hid, hid, 1])
    q1_t, q2_t = mlp([o + a, hid, hid, 1]), mlp([o + a, hid, hid, 1])
    q1_t.load_state_dict(q1.state_dict())
    q2_t.load_state_dict(q2.state_dict())
    log_alpha = torch.zeros(1, requires_grad=True)
    pi_opt = torch.optim.Adam(policies.parameters(), lr=lr)
    q_opt = torch.optim.Adam(list(q1.parameters()) + list(q2.parameters()), lr=lr)
    a_opt = torch.optim.Adam([log_alpha], lr=alpha_lr)
    target_entropy = -float(a)

    # The frozen ensemble (elites only).
    d_in, d_out = o + a, 1 + o
    sizes = [d_in] + [args.model_hidden] * 4 + [2 * d_out]
    model = []
    for x, y in zip(sizes[:-1], sizes[1:]):
        bound = 1.0 / x**0.5
        model.append((torch.empty(k, x, y).uniform_(-bound, bound), torch.empty(k, 1, y).uniform_(-bound, bound)))
    max_lv, min_lv = torch.full((1, 1, d_out), 0.5), torch.full((1, 1, d_out), -10.0)
    mu_in, sd_in = torch.zeros(1, d_in), torch.ones(1, d_in)

    def predict(s, act):
        x = ((torch.cat([s, act], 1) - mu_in) / sd_in).unsqueeze(0).expand(k, -1, -1).contiguous()
        for i, (w, b) in enumerate(model):
            x = torch.bmm(x, w) + b
            if i < len(model) - 1:
                x = F.silu(x)
        mean, lv = x[..., :d_out], x[..., d_out:]
        lv = max_lv - F.softplus(max_lv - lv)
        lv = min_lv + F.softplus(lv - min_lv)
        return mean, lv

    def ovr(mean, lv):
        centred = mean - mean.mean(0, keepdim=True)
        var = lv.exp()
        second = var + centred.pow(2)
        mu_r = (centred.sum(0, keepdim=True) - centred) / (k - 1)
        var_r = ((second.sum(0, keepdim=True) - second) / (k - 1) - mu_r.pow(2)).clamp_min(1e-12)
        kl = 0.5 * (var_r.log() - lv + (var + (centred - mu_r).pow(2)) / var_r - 1.0)
        return kl.sum(2).sum(0).unsqueeze(1)

    def min_q(net1, net2, s, act):
        x = torch.cat([s, act], 1)
        return torch.min(net1(x), net2(x))

    size = 100_000
    buf = {
        "obs": torch.randn(size, o), "act": torch.rand(size, a) * 2 - 1, "rew": torch.randn(size, 1),
        "next": torch.randn(size, o), "done": torch.zeros(size, 1),
    }

    def update():
        idx = torch.randint(0, size, (n,))
        s, act, r, s2, d = (buf[key][idx] for key in ("obs", "act", "rew", "next", "done"))
        alpha = log_alpha.exp().item()
        with torch.no_grad():
            a2, lp2 = policies[0].sample(s2)
            y = r + gamma * (1 - d) * (min_q(q1_t, q2_t, s2, a2) - alpha * lp2)
        x = torch.cat([s, act], 1)
        q_loss = F.mse_loss(q1(x), y) + F.mse_loss(q2(x), y)
        q_opt.zero_grad()
        q_loss.backward()
        q_opt.step()

        for p_ in list(q1.parameters()) + list(q2.parameters()):
            p_.requires_grad_(False)
        total = torch.zeros(n, 1)
        alive = torch.ones(n, 1)
        g = 1.0
        state = s
        lp0 = None
        for t, pi in enumerate(policies):
            act_t, lp = pi.sample(state)
            if t == 0:
                lp0 = lp
            if t == len(policies) - 1:
                total = total + g * alive * (min_q(q1, q2, state, act_t) - alpha * lp)
                break
            mean, lv = predict(state, act_t)
            u = ovr(mean, lv)
            cut = (u >= u_threshold).float()
            pick = F.one_hot(torch.randint(0, k, (n,)), k).T.unsqueeze(2).float()
            mu = (mean * pick).sum(0)
            std = ((lv * pick).sum(0) * 0.5).exp()
            y_ = mu + std * torch.randn_like(mu)
            total = total + g * alive * (1 - cut) * (y_[:, :1] - alpha * lp - beta * u)
            total = total + g * alive * cut * (min_q(q1, q2, state, act_t) - alpha * lp)
            alive = alive * (1 - cut)
            state = state + y_[:, 1:]
            g *= gamma
        loss = -total.mean()
        pi_opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policies.parameters(), clip)
        pi_opt.step()
        for p_ in list(q1.parameters()) + list(q2.parameters()):
            p_.requires_grad_(True)

        a_loss = -(log_alpha * (lp0.detach().mean() + target_entropy))
        a_opt.zero_grad()
        a_loss.backward()
        a_opt.step()
        with torch.no_grad():
            for net, tgt in ((q1, q1_t), (q2, q2_t)):
                for p_, t_ in zip(net.parameters(), tgt.parameters()):
                    t_.mul_(1 - tau).add_(tau * p_)

    for _ in range(3):
        update()
    best = float("inf")
    for _ in range(args.repeats):
        sync()
        start = time.perf_counter()
        for _ in range(args.updates):
            update()
        sync()
        best = min(best, time.perf_counter() - start)
    print(f"torch={torch.__version__} device={args.device} threads={torch.get_num_threads()}")
    print(f"updates_per_s={args.updates / best}")


if __name__ == "__main__":
    main()
