"""Reference for `mpdp bench sac`: one SAC update in plain PyTorch on CPU.

The same update mpdp's SAC learner performs: 2x256 ReLU tanh-Gaussian actor (log-std squashed
into [-5, 2]), twin 2x256 ReLU Q networks with Polyak targets (tau 0.005), automatic entropy
temperature (target -|A|, loss -log_alpha * (log_pi + target)), Adam lr 3e-4, gamma 0.99, batch 256. Hopper sizes by default
(obs 11, act 3). Random batches are drawn before timing. Prints `updates_per_s=X`, the best of
--repeats measurements of --updates updates each.
"""
import argparse
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


class Actor(nn.Module):
    def __init__(self, obs_dim, act_dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(obs_dim, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.mean = nn.Linear(hidden, act_dim)
        self.log_std = nn.Linear(hidden, act_dim)

    def sample(self, obs):
        h = F.relu(self.fc2(F.relu(self.fc1(obs))))
        mean = self.mean(h)
        log_std = torch.tanh(self.log_std(h))
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (log_std + 1)
        std = log_std.exp()
        eps = torch.randn_like(mean)
        x = mean + std * eps
        y = torch.tanh(x)
        log_prob = -0.5 * eps.pow(2) - log_std - 0.5 * math.log(2 * math.pi)
        # log(1 - tanh(x)^2), exact and stable
        log_prob = log_prob - 2 * (math.log(2) - x - F.softplus(-2 * x))
        return y, log_prob.sum(-1, keepdim=True)


class QNet(nn.Module):
    def __init__(self, obs_dim, act_dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(obs_dim + act_dim, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.fc3 = nn.Linear(hidden, 1)

    def forward(self, obs, act):
        x = torch.cat([obs, act], -1)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--obs-dim", type=int, default=11)
    p.add_argument("--act-dim", type=int, default=3)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--updates", type=int, default=200)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu", help="cpu or cuda (the side measured against a GPU build)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's default)")
    args = p.parse_args()
    torch.set_default_device(args.device)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    o, a, h, b = args.obs_dim, args.act_dim, args.hidden, args.batch

    actor = Actor(o, a, h)
    q1, q2, q1_t, q2_t = QNet(o, a, h), QNet(o, a, h), QNet(o, a, h), QNet(o, a, h)
    q1_t.load_state_dict(q1.state_dict())
    q2_t.load_state_dict(q2.state_dict())
    log_alpha = torch.zeros(1, requires_grad=True)
    target_entropy = -float(a)
    q_opt = torch.optim.Adam(list(q1.parameters()) + list(q2.parameters()), lr=3e-4)
    pi_opt = torch.optim.Adam(actor.parameters(), lr=3e-4)
    a_opt = torch.optim.Adam([log_alpha], lr=3e-4)
    gamma, tau = 0.99, 0.005

    batches = [
        (torch.randn(b, o), torch.rand(b, a) * 2 - 1, torch.randn(b, 1), torch.randn(b, o), (torch.rand(b, 1) < 0.01).float())
        for _ in range(16)
    ]

    def update(batch):
        obs, act, rew, next_obs, term = batch
        alpha = log_alpha.exp().detach()
        with torch.no_grad():
            next_a, next_logp = actor.sample(next_obs)
            q_next = torch.min(q1_t(next_obs, next_a), q2_t(next_obs, next_a)) - alpha * next_logp
            target = rew + gamma * (1 - term) * q_next
        q_loss = F.mse_loss(q1(obs, act), target) + F.mse_loss(q2(obs, act), target)
        q_opt.zero_grad()
        q_loss.backward()
        q_opt.step()

        pi_a, logp = actor.sample(obs)
        q_pi = torch.min(q1(obs, pi_a), q2(obs, pi_a))
        pi_loss = (alpha * logp - q_pi).mean()
        pi_opt.zero_grad()
        pi_loss.backward()
        pi_opt.step()

        a_loss = -(log_alpha * (logp.detach() + target_entropy)).mean()
        a_opt.zero_grad()
        a_loss.backward()
        a_opt.step()

        with torch.no_grad():
            for net, tgt in ((q1, q1_t), (q2, q2_t)):
                for p_, t_ in zip(net.parameters(), tgt.parameters()):
                    t_.mul_(1 - tau).add_(p_, alpha=tau)

    for i in range(20):
        update(batches[i % len(batches)])
    best = float("inf")
    for _ in range(args.repeats):
        sync()
        start = time.perf_counter()
        for i in range(args.updates):
            update(batches[i % len(batches)])
        sync()
        best = min(best, time.perf_counter() - start)
    print(f"torch={torch.__version__} device={args.device} threads={torch.get_num_threads()}")
    print(f"updates_per_s={args.updates / best}")


if __name__ == "__main__":
    main()
