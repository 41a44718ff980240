"""`adversarial`: a generator of channel gates trained against a discriminator (GAL: Lin et al.
2019, "Towards Optimal Structured CNN Pruning via Generative Adversarial Learning"), sampled
for structures that the shared proxy judges, steered by a two-indicator selection.

Reading of GAL used here. GAL learns a soft mask per channel, placed after BN, so that a
discriminator cannot tell the masked network's outputs from the unpruned baseline's, with a
sparsity term on the mask. This search space is one keep ratio per unit and each cut keeps the
unit's channels in a fixed ranked order (inherit.rank_order), so the mask is a *soft width*:
channel at rank k of unit i is gated by sigmoid((r_i * width_i - k - 0.5) / temperature)
(space.Gates), exactly the channels a cut to r_i keeps when the temperature goes to 0. The
generator is a distribution over ratios, r = lower + (upper - lower) * sigmoid(mu + sigma * e),
e ~ N(0, 1) per unit (reparameterised, so gates are differentiable in mu and sigma).

One generator step, on a batch of training images, one sampled structure per image:
  discriminator  a small MLP on the detector's decoded class scores (the top-k sorted scores
                 and the per-anchor scores pooled into bins), trained with BCE to call the
                 unpruned model's outputs real and the gated model's fake;
  generator      adversarial * BCE(D(gated), real)  (the non-saturating GAN loss: fool D)
                 + sparsity * (FLOPs(r) / target - 1)^2   (space.FlopsModel, differentiable)
                 + steer * mean squared distance of mu to the survivors' logits.
Each generation samples `population` structures from the generator, scales them onto the
budget with the search's projection (the first generation also holds the budget start), and
the shared proxy scores them. Selection has two competing indicators, channels pruned (more is
better) and fitness (accuracy at the budget): all structures evaluated so far are sorted into
non-dominated fronts (NSGA-II's sort), the first fronts give `survivors` structures (the last
front cut by fitness), and those survivors steer the generator's mean for the next
generation's adversarial steps.

The state is mu, sigma, the discriminator (a base64 torch archive, read with
weights_only=True), the evaluated pool and the numpy generator every random draw comes from;
the Adam optimisers are new each generation, so a resumed search gives the same numbers.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from compress.prune.acp.ddpg import _pack, _unpack
from compress.prune.acp.optimizers import LearnedOptimizer, _array, _finite, register

ADVERSARIAL_DEFAULTS: dict[str, Any] = {
    "population": 10,  # structures evaluated per generation
    "generations": 10,
    "steps": 4,  # discriminator + generator steps per generation
    "images": 8,  # training images for the steps (the search's BN images)
    "batch_size": 4,  # images per step, one sampled structure each
    "hidden": 64,  # discriminator MLP width
    "topk": 32,  # discriminator input: the top-k class scores ...
    "bins": 32,  # ... and the per-anchor scores averaged into this many bins
    "lr": 0.05,  # generator (mu, log sigma)
    "d_lr": 1.0e-3,  # discriminator
    "adversarial": 1.0,  # loss weights: fool the discriminator ...
    "sparsity": 10.0,  # ... modelled FLOPs at the target ...
    "steer": 1.0,  # ... mu towards the Pareto survivors
    "survivors": 5,
    "temperature": 1.0,  # soft width, in channels
    "sigma": 0.5,  # the generator's initial spread (logit units)
    "seed": 0,
}


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 0.02, 0.98)
    return np.log(p / (1.0 - p))


def fronts(objectives: np.ndarray) -> list[list[int]]:
    """Non-dominated sorting of [n, m] objectives, all maximised: front 0 is the Pareto set,
    front k what is left non-dominated once fronts 0..k-1 are removed."""
    n = len(objectives)
    ge = (objectives[:, None, :] >= objectives[None, :, :]).all(-1)
    gt = (objectives[:, None, :] > objectives[None, :, :]).any(-1)
    dominates = ge & gt  # [i, j]: i dominates j
    count = dominates.sum(0)
    out, left = [], np.ones(n, dtype=bool)
    while left.any():
        front = [int(i) for i in np.flatnonzero(left & (count == 0))]
        out.append(front)
        left[front] = False
        count = count - dominates[front].sum(0)
    return out


class Discriminator(nn.Module):
    """Decoded class scores [batch, anchors, classes] -> logit of 'the unpruned model's'."""

    def __init__(self, topk: int, bins: int, hidden: int) -> None:
        super().__init__()
        self.topk, self.bins = topk, bins
        self.net = nn.Sequential(
            nn.Linear(topk + bins, hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden, hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden, 1),
        )
        # the unpruned outputs' per-feature mean and overall spread: a pruned model's scores
        # may differ by hundredths, which an MLP on raw scores barely sees
        self.register_buffer("centre", torch.zeros(topk + bins))
        self.register_buffer("scale", torch.ones(()))

    @torch.no_grad()
    def reference(self, real: torch.Tensor) -> None:
        """Standardise inputs by the unpruned model's decoded scores `real`."""
        f = self.features(real, standardise=False)
        self.centre.copy_(f.mean(0))
        self.scale.copy_((f - f.mean(0)).std().clamp_min(1e-6) if len(f) > 1 else 1.0)

    def features(self, scores: torch.Tensor, standardise: bool = True) -> torch.Tensor:
        flat = scores.flatten(1)
        top = flat.topk(min(self.topk, flat.shape[1]), dim=1).values
        top = nn.functional.pad(top, (0, self.topk - top.shape[1]))
        pooled = nn.functional.adaptive_avg_pool1d(flat[:, None], self.bins)[:, 0]
        f = torch.cat([top, pooled], 1)
        return (f - self.centre) / self.scale if standardise else f

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        return self.net(self.features(scores)).squeeze(-1)


@register
class AdversarialOptimizer(LearnedOptimizer):
    """GAL-style gate generator against a discriminator, Pareto-steered (module doc)."""

    name = "adversarial"
    defaults = ADVERSARIAL_DEFAULTS

    def __init__(self, lower, upper, cfg, project, evaluations=None) -> None:
        for key in ("population", "images", "batch_size", "hidden", "topk", "bins", "survivors"):
            if int(cfg[key]) < 1:
                raise ValueError(f"adversarial.{key} {cfg[key]}: at least 1")
        if float(cfg["temperature"]) <= 0 or float(cfg["sigma"]) <= 0:
            raise ValueError("adversarial.temperature and adversarial.sigma must be > 0")
        super().__init__(lower, upper, cfg, project, evaluations)
        self.survivors: list[int] = []
        self.losses: dict[str, float] = {}
        self.mu = torch.zeros(len(self.lower))
        self.log_sigma = torch.full((len(self.lower),), float(np.log(float(cfg["sigma"]))))
        self._gates = None

    def bind(self, space) -> None:
        super().bind(space)
        cfg = self.cfg
        with torch.random.fork_rng():
            torch.manual_seed(int(cfg["seed"]))
            self.disc = Discriminator(int(cfg["topk"]), int(cfg["bins"]), int(cfg["hidden"]))

    # ---- the generator -------------------------------------------------------------------
    def ratios(self, eps: torch.Tensor, mu=None, log_sigma=None) -> torch.Tensor:
        """[batch, units] noise -> ratios in [lower, upper] (differentiable in mu, sigma)."""
        mu = self.mu if mu is None else mu
        log_sigma = self.log_sigma if log_sigma is None else log_sigma
        lo = torch.as_tensor(self.lower, dtype=torch.float32)
        span = torch.as_tensor(self.upper - self.lower, dtype=torch.float32)
        return lo + span * torch.sigmoid(mu + log_sigma.exp() * eps)

    def sample(self, n: int) -> np.ndarray:
        eps = torch.as_tensor(self.rng.standard_normal((n, len(self.lower))), dtype=torch.float32)
        with torch.no_grad():
            return self.ratios(eps).double().numpy()

    def mean_structure(self) -> np.ndarray:
        with torch.no_grad():
            return self.ratios(torch.zeros(1, len(self.lower)))[0].double().numpy()

    # ---- data ----------------------------------------------------------------------------
    @property
    def gates(self):
        if self._gates is None:
            self._gates = self.space.gated()
            images = torch.cat(list(self.space.images))[: int(self.cfg["images"])]
            if not len(images):
                raise ValueError("adversarial: the search has no training images for the gates")
            self.batches = list(images.split(int(self.cfg["batch_size"])))
            with torch.no_grad():
                self.real = [self._gates.scores(x, None) for x in self.batches]
            self.disc.reference(torch.cat(self.real))
        return self._gates

    # ---- one step ------------------------------------------------------------------------
    def fake_scores(self, i: int, mu=None, log_sigma=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Gated scores of batch i, one generated structure per image: (scores, ratios)."""
        x = self.batches[i % len(self.batches)]
        eps = torch.as_tensor(
            self.rng.standard_normal((len(x), len(self.lower))), dtype=torch.float32
        )
        r = self.ratios(eps, mu, log_sigma)
        return self.gates.scores(x, r, float(self.cfg["temperature"])), r

    def discriminator_loss(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        bce = nn.functional.binary_cross_entropy_with_logits
        d_real, d_fake = self.disc(real), self.disc(fake)
        return bce(d_real, torch.ones_like(d_real)) + bce(d_fake, torch.zeros_like(d_fake))

    def generator_loss(
        self, fake: torch.Tensor, r: torch.Tensor, mu: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        d_fake = self.disc(fake)
        adv = nn.functional.binary_cross_entropy_with_logits(d_fake, torch.ones_like(d_fake))
        flops = self.space.flops.ratio_torch(r)
        sparsity = ((flops / self.space.target - 1.0) ** 2).mean()
        if self.survivors:
            z = torch.as_tensor(
                _logit((np.asarray(self.X)[self.survivors] - self.lower) / self._span()),
                dtype=torch.float32,
            )
            steer = ((mu[None] - z) ** 2).mean()
        else:
            steer = torch.zeros(())
        w = self.cfg
        total = (
            float(w["adversarial"]) * adv
            + float(w["sparsity"]) * sparsity
            + float(w["steer"]) * steer
        )
        return {"total": total, "adversarial": adv, "sparsity": sparsity, "steer": steer}

    def _span(self) -> np.ndarray:
        return np.where(self.upper > self.lower, self.upper - self.lower, 1.0)

    def train(self, steps: int | None = None) -> dict[str, float]:
        """`steps` discriminator + generator steps; returns the last step's losses."""
        _ = self.gates
        mu = self.mu.clone().requires_grad_(True)
        log_sigma = self.log_sigma.clone().requires_grad_(True)
        g_opt = torch.optim.Adam([mu, log_sigma], lr=float(self.cfg["lr"]))
        d_opt = torch.optim.Adam(self.disc.parameters(), lr=float(self.cfg["d_lr"]))
        out: dict[str, float] = {}
        for step in range(int(self.cfg["steps"]) if steps is None else steps):
            i = self.generation * int(self.cfg["steps"]) + step
            fake, r = self.fake_scores(i, mu, log_sigma)
            d_loss = self.discriminator_loss(self.real[i % len(self.real)], fake.detach())
            d_opt.zero_grad()
            d_loss.backward()
            d_opt.step()
            g = self.generator_loss(fake, r, mu)
            g_opt.zero_grad()
            g["total"].backward()
            g_opt.step()
            with torch.no_grad():
                log_sigma.clamp_(-4.0, 1.0)
                out = {"d_loss": d_loss.item(), **{f"g_{k}": v.item() for k, v in g.items()}}
        self.mu, self.log_sigma = mu.detach(), log_sigma.detach()
        self.losses = out
        return out

    # ---- the interface -------------------------------------------------------------------
    def start(self, starts: dict[str, np.ndarray]) -> None:
        if "budget" in starts:
            centre = (np.asarray(starts["budget"]) - self.lower) / self._span()
            self.mu = torch.as_tensor(_logit(centre), dtype=torch.float32)
        self.train()
        self.first_batch(starts, self.sample)

    def update(self, fitness: np.ndarray) -> None:
        self.survivors = self.select()
        self.train()
        self.batch = np.stack([self.project(r) for r in self.sample(int(self.cfg["population"]))])

    def select(self) -> list[int]:
        """Indices into the evaluated pool: the first non-dominated fronts of (channels
        pruned, fitness), `survivors` of them (the last front taken by fitness)."""
        X, y = np.asarray(self.X), np.asarray(self.y)
        pruned = ((1.0 - X) * self.space.widths).sum(1)
        chosen: list[int] = []
        for front in fronts(np.stack([pruned, y], 1)):
            room = int(self.cfg["survivors"]) - len(chosen)
            chosen += sorted(front, key=lambda i: -y[i])[:room]
            if len(chosen) >= int(self.cfg["survivors"]):
                break
        return chosen

    def log_fields(self) -> dict[str, Any]:
        return {
            **{k: round(v, 5) for k, v in self.losses.items()},
            "front": len(self.survivors),
            "mean_flops": round(self.space.flops.ratio(self.mean_structure()), 4),
        }

    # ---- state ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        nets = {"disc": self.disc.state_dict(), "mu": self.mu, "log_sigma": self.log_sigma}
        return {
            **super().state_dict(),
            "batch": self.batch.tolist(),
            "X": self.X,
            "y": _finite(np.asarray(self.y)),
            "survivors": self.survivors,
            "losses": self.losses,
            "networks": _pack(nets),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.batch = np.asarray(state["batch"], dtype=np.float64)
        self.X, self.y = state["X"], _array(state["y"]).tolist()
        self.survivors, self.losses = list(state["survivors"]), dict(state["losses"])
        nets = _unpack(state["networks"])
        self.disc.load_state_dict(nets["disc"])
        self.mu, self.log_sigma = nets["mu"], nets["log_sigma"]
