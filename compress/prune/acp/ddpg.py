"""`ddpg`: two DDPG agents set per-unit keep ratios layer by layer; an LSTM simulator trained
on every structure evaluated so far stands in for the fitness, so the agents explore many
episodes on it and only the most promising structures are evaluated for real.

The agents follow AMC (He et al. 2018, "AMC: AutoML for Model Compression"): an episode walks
the units input side first; at unit t the state is the layer (`Space.features`: index, in/out
channels, kernel, stride, output size, depthwise, FLOPs share), the FLOPs cut so far, the
budget still open if every later unit took its smallest ratio, the target and the previous
action; the action is the keep ratio in [lower, upper], capped so that the later units can
still meet the FLOPs budget (AMC's resource-constrained action). The reward comes at the end of
the episode: the simulator's fitness of the whole structure scaled onto the budget, minus a
moving-average baseline, given to every step of the episode (AMC's shared reward).

"Two agents" is read as double actors with clipped double critics (Lyu et al. 2022, "Efficient
Continuous Control with Double Actors and Regularized Critics", DARC; Fujimoto et al. 2018,
TD3): two actor-critic pairs, each with target networks and soft updates (tau). At every step
both actors propose a ratio and the one whose action the critics value higher (the smaller of
the two critics, so an over-estimate of one does not decide) is taken, plus exploration noise
that decays per episode; each critic learns towards r + discount * min of both target critics
at its own target actor's next action. One replay buffer feeds both (off-policy).

The simulator is a learned performance predictor, as the LSTM surrogate of progressive
architecture search (Liu et al. 2018, PNAS): an `nn.LSTM` over the units' (layer features,
ratio) sequence, its last hidden state through a linear layer to the predicted fitness
(standardised over the real data). After each generation it is trained on
every structure evaluated for real, and those structures enter the replay buffer with their
real fitness as reward. Of the generation's simulated episodes (and one greedy one), the
`population` best by the simulator that are new are scaled onto the budget by the search's
own projection and evaluated; the first generation is the budget start plus uniform random
structures at the budget (nothing to learn from yet).

Every random draw comes from one numpy generator and the networks start from a seed, so a
seeded run is deterministic; the optimisers (Adam) are new each generation, so the state after
a generation is the networks, the replay buffer and a few figures: `state_dict` holds the
networks and the buffer as one base64 torch archive (read with weights_only=True) and the
rest as JSON, and a resumed search continues with the very same numbers.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
import torch
from torch import nn

from compress.prune.acp.optimizers import LearnedOptimizer, _array, _finite, register

DDPG_DEFAULTS: dict[str, Any] = {
    "population": 10,  # structures evaluated for real per generation
    "generations": 10,
    "episodes": 100,  # simulated episodes per generation
    "warmup": 20,  # the first episodes act uniformly at random (fills the buffer)
    "updates": 8,  # gradient steps per agent after each episode
    "batch_size": 64,
    "buffer": 4000,  # replay capacity (transitions)
    "hidden": 64,  # actor / critic MLP width
    "actor_lr": 1.0e-3,
    "critic_lr": 3.0e-3,
    "tau": 0.01,  # soft target update
    "discount": 1.0,  # AMC: every step carries the episode's reward
    "noise": 0.5,  # exploration: gaussian sigma on the action in [0, 1] ...
    "noise_decay": 0.99,  # ... times this per episode ...
    "noise_min": 0.15,  # ... never under this: the proposals stay diverse
    "baseline_decay": 0.95,  # moving average of the episode rewards
    "sim_hidden": 32,  # LSTM simulator
    "sim_epochs": 200,  # full-batch Adam steps on the real data per generation
    "sim_lr": 1.0e-2,
    "seed": 0,
}
EXTRA = ("reduced", "open", "target", "previous")  # the state beyond the layer features


def _mlp(inputs: int, hidden: int, out: nn.Module | None = None) -> nn.Sequential:
    layers = [nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU()]
    layers.append(nn.Linear(hidden, 1))
    return nn.Sequential(*layers, *([out] if out is not None else []))


class Agent(nn.Module):
    """One actor (state -> action in [0, 1]) and one critic ((state, action) -> value), each
    with a target copy."""

    def __init__(self, state: int, hidden: int) -> None:
        super().__init__()
        self.actor = _mlp(state, hidden, nn.Sigmoid())
        self.critic = _mlp(state + 1, hidden)
        self.actor_target = _mlp(state, hidden, nn.Sigmoid())
        self.critic_target = _mlp(state + 1, hidden)
        self.actor_target.load_state_dict(self.actor.state_dict())
        self.critic_target.load_state_dict(self.critic.state_dict())
        for p in [*self.actor_target.parameters(), *self.critic_target.parameters()]:
            p.requires_grad_(False)

    def q(self, s: torch.Tensor, a: torch.Tensor, target: bool = False) -> torch.Tensor:
        net = self.critic_target if target else self.critic
        return net(torch.cat([s, a], 1))

    @torch.no_grad()
    def soft_update(self, tau: float) -> None:
        for net, tgt in ((self.actor, self.actor_target), (self.critic, self.critic_target)):
            for p, t in zip(net.parameters(), tgt.parameters()):
                t.mul_(1.0 - tau).add_(p, alpha=tau)


class Simulator(nn.Module):
    """LSTM over the units' (features, ratio) sequence -> predicted (standardised) fitness."""

    def __init__(self, features: int, hidden: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(features + 1, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 1)

    def forward(self, feats: torch.Tensor, ratios: torch.Tensor) -> torch.Tensor:
        """feats [units, F], ratios [batch, units] -> [batch]."""
        x = torch.cat([feats.expand(len(ratios), -1, -1), ratios.unsqueeze(-1)], -1)
        out, _ = self.lstm(x)
        return self.head(out[:, -1]).squeeze(-1)


class Buffer:
    """Replay buffer of (state, action, reward, next state, done), a ring of fixed capacity."""

    def __init__(self, capacity: int, state: int) -> None:
        self.capacity, self.size, self.head = int(capacity), 0, 0
        self.data = np.zeros((self.capacity, 2 * state + 3), dtype=np.float32)
        self.state = state

    def push(self, s: np.ndarray, a: float, r: float, s2: np.ndarray, done: bool) -> None:
        self.data[self.head] = np.concatenate([s, [a, r], s2, [float(done)]])
        self.head = (self.head + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, rng: np.random.Generator, n: int) -> list[torch.Tensor]:
        rows = torch.as_tensor(self.data[rng.integers(0, self.size, n)])
        k = self.state
        return [
            rows[:, :k],
            rows[:, k : k + 1],
            rows[:, k + 1 : k + 2],
            rows[:, k + 2 : -1],
            rows[:, -1:],
        ]


def _pack(tensors: dict[str, Any]) -> str:
    buf = io.BytesIO()
    torch.save(tensors, buf)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _unpack(text: str) -> dict[str, Any]:
    return torch.load(io.BytesIO(base64.b64decode(text)), weights_only=True)


@register
class DDPGOptimizer(LearnedOptimizer):
    """Double-actor DDPG over per-unit ratios with an LSTM fitness simulator (module doc)."""

    name = "ddpg"
    defaults = DDPG_DEFAULTS

    def __init__(self, lower, upper, cfg, project, evaluations=None) -> None:
        for key in ("population", "episodes", "batch_size", "buffer", "hidden", "sim_hidden"):
            if int(cfg[key]) < 1:
                raise ValueError(f"ddpg.{key} {cfg[key]}: at least 1")
        super().__init__(lower, upper, cfg, project, evaluations)
        self.noise, self.baseline, self.episodes_done = float(cfg["noise"]), None, 0
        self.sim_loss: list[float] = []  # the simulator's training loss, first and last step

    # ---- networks -------------------------------------------------------------------------
    def _build(self) -> None:
        feats = self.space.features
        self.feats = torch.as_tensor(feats, dtype=torch.float32)
        self.state_size = feats.shape[1] + len(EXTRA)
        hidden = int(self.cfg["hidden"])
        with torch.random.fork_rng():
            torch.manual_seed(int(self.cfg["seed"]))
            self.agents = nn.ModuleList([Agent(self.state_size, hidden) for _ in range(2)])
            self.sim = Simulator(feats.shape[1], int(self.cfg["sim_hidden"]))
        self.buffer = Buffer(int(self.cfg["buffer"]), self.state_size)
        self.y_mean, self.y_std = 0.0, 1.0

    def bind(self, space) -> None:
        super().bind(space)
        self._build()

    # ---- the interface -------------------------------------------------------------------
    def start(self, starts: dict[str, np.ndarray]) -> None:
        self.first_batch(starts, self._uniform)

    def update(self, fitness: np.ndarray) -> None:
        self.train_simulator()
        for ratios, value in zip(self.batch, fitness):
            self._remember(ratios, float(value))
        self._optimisers()
        candidates = [self.episode() for _ in range(int(self.cfg["episodes"]))]
        candidates.append(self.episode(explore=False))
        self.batch = self._select(candidates)

    # ---- the simulator -------------------------------------------------------------------
    def predict(self, ratios: np.ndarray) -> np.ndarray:
        """Simulated fitness of [batch, units] ratios (in fitness units)."""
        with torch.no_grad():
            z = self.sim(self.feats, torch.as_tensor(np.atleast_2d(ratios), dtype=torch.float32))
        return z.double().numpy() * self.y_std + self.y_mean

    def train_simulator(self) -> list[float]:
        """Full-batch Adam on every real evaluation; returns the loss per step."""
        y = np.asarray(self.y)
        self.y_mean, self.y_std = float(y.mean()), float(max(y.std(), 1e-6))
        x = torch.as_tensor(np.asarray(self.X), dtype=torch.float32)
        t = torch.as_tensor((y - self.y_mean) / self.y_std, dtype=torch.float32)
        opt = torch.optim.Adam(self.sim.parameters(), lr=float(self.cfg["sim_lr"]))
        losses = []
        for _ in range(int(self.cfg["sim_epochs"])):
            loss = nn.functional.mse_loss(self.sim(self.feats, x), t)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        self.sim_loss = [losses[0], losses[-1]] if losses else []
        return losses

    # ---- episodes ------------------------------------------------------------------------
    def _state(self, ratios: np.ndarray, t: int, previous: float) -> np.ndarray:
        """The state at unit t: units before t at `ratios`, t and after at full width."""
        flops, target = self.space.flops, self.space.target
        done = np.where(np.arange(len(ratios)) < t, ratios, 1.0)
        floor = np.where(np.arange(len(ratios)) < t, ratios, self.lower)
        extra = [1.0 - flops.ratio(done), target - flops.ratio(floor), target, previous]
        return np.concatenate([self.space.features[t], extra]).astype(np.float32)

    def _cap(self, ratios: np.ndarray, t: int) -> float:
        """The largest ratio of unit t that leaves the budget reachable (AMC)."""
        r = np.where(np.arange(len(ratios)) < t, ratios, self.lower)
        a, b = self.space.flops.affine_in(r, t)
        top = (self.space.target - a) / b if b > 0 else self.upper[t]
        return float(np.clip(top, self.lower[t], self.upper[t]))

    @torch.no_grad()
    def act(self, state: np.ndarray) -> float:
        """Both actors propose; the action the critics value higher (their minimum) wins."""
        s = torch.as_tensor(state)[None]
        actions = [agent.actor(s) for agent in self.agents]
        values = [min(float(g.q(s, a)) for g in self.agents) for a in actions]
        return float(actions[int(np.argmax(values))])

    def rollout(self, explore: bool) -> tuple[np.ndarray, list[np.ndarray], list[float]]:
        """One pass over the units: (ratios, states, actions)."""
        n = len(self.lower)
        ratios, states, actions = self.upper.copy(), [], []
        previous = 1.0
        warm = explore and self.episodes_done < int(self.cfg["warmup"])
        for t in range(n):
            s = self._state(ratios, t, previous)
            if warm:
                a = float(self.rng.random())
            else:
                a = self.act(s)
                if explore:
                    a = float(np.clip(a + self.rng.normal(0.0, self.noise), 0.0, 1.0))
            span = self.upper[t] - self.lower[t]
            r = min(self.lower[t] + a * span, self._cap(ratios, t))
            a = (r - self.lower[t]) / span if span > 0 else 0.0
            ratios[t] = r
            states.append(s)
            actions.append(a)
            previous = a
        return ratios, states, actions

    def to_budget(self, ratios: np.ndarray, steps: int = 40) -> np.ndarray:
        """The common scale that brings the modelled FLOPs to the target (bisection): the cheap
        stand-in for the search's projection while episodes run on the simulator."""
        flops, target = self.space.flops, self.space.target
        at = lambda s: np.clip(ratios * s, self.lower, self.upper)  # noqa: E731
        lo, hi = 0.0, float(np.max(self.upper / np.maximum(ratios, 1e-9)))
        if flops.ratio(at(hi)) <= target:
            return at(hi)
        for _ in range(steps):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if flops.ratio(at(mid)) <= target else (lo, mid)
        return at(lo)

    def episode(self, explore: bool = True) -> tuple[float, np.ndarray]:
        """One simulated episode: act, score on the simulator, learn. Returns (reward, ratios
        at the budget)."""
        ratios, states, actions = self.rollout(explore)
        proposal = self.to_budget(ratios)
        reward = float(self.predict(proposal)[0])
        if explore:
            self._store(states, actions, reward)
            self.episodes_done += 1
            self.noise = max(
                float(self.cfg["noise_min"]), self.noise * float(self.cfg["noise_decay"])
            )
            self.learn()
        return reward, proposal

    def _store(self, states: list[np.ndarray], actions: list[float], fitness: float) -> None:
        # rewards in units of the real fitness' spread, so learning rates fit any proxy
        reward = (fitness - self.y_mean) / self.y_std
        if self.baseline is None:
            self.baseline = reward
        advantage = reward - self.baseline
        d = float(self.cfg["baseline_decay"])
        self.baseline = d * self.baseline + (1.0 - d) * reward
        for t, (s, a) in enumerate(zip(states, actions)):
            last = t == len(states) - 1
            self.buffer.push(s, a, advantage, s if last else states[t + 1], last)

    def _remember(self, ratios: np.ndarray, fitness: float) -> None:
        """A structure evaluated for real, replayed as the episode that would have built it."""
        span = np.where(self.upper > self.lower, self.upper - self.lower, 1.0)
        actions = np.clip((ratios - self.lower) / span, 0.0, 1.0)
        states, previous, built = [], 1.0, self.upper.copy()
        for t in range(len(ratios)):
            states.append(self._state(built, t, previous))
            built[t], previous = ratios[t], float(actions[t])
        self._store(states, actions.tolist(), fitness)

    def learn(self) -> None:
        if self.buffer.size < int(self.cfg["batch_size"]):
            return
        gamma, tau = float(self.cfg["discount"]), float(self.cfg["tau"])
        for _ in range(int(self.cfg["updates"])):
            s, a, r, s2, done = self.buffer.sample(self.rng, int(self.cfg["batch_size"]))
            for k, agent in enumerate(self.agents):
                with torch.no_grad():
                    a2 = agent.actor_target(s2)
                    q2 = torch.minimum(*(g.q(s2, a2, target=True) for g in self.agents))
                    y = r + gamma * (1.0 - done) * q2
                critic_loss = nn.functional.mse_loss(agent.q(s, a), y)
                self.critic_opt[k].zero_grad()
                critic_loss.backward()
                self.critic_opt[k].step()
                actor_loss = -agent.q(s, agent.actor(s)).mean()
                self.actor_opt[k].zero_grad()
                actor_loss.backward()
                self.actor_opt[k].step()
                agent.soft_update(tau)

    def _optimisers(self) -> None:
        # new each generation: the state between generations is the networks alone
        self.actor_opt = [
            torch.optim.Adam(g.actor.parameters(), lr=float(self.cfg["actor_lr"]))
            for g in self.agents
        ]
        self.critic_opt = [
            torch.optim.Adam(g.critic.parameters(), lr=float(self.cfg["critic_lr"]))
            for g in self.agents
        ]

    def _select(self, candidates: list[tuple[float, np.ndarray]]) -> np.ndarray:
        """The `population` best new structures by the simulator, projected by the search
        (at most 3 x population projections: each counts FLOPs for real)."""
        pop = int(self.cfg["population"])
        seen = {self.space.key(np.asarray(x)) for x in self.X}
        picked: list[np.ndarray] = []
        order = sorted(range(len(candidates)), key=lambda i: -candidates[i][0])
        for i in order[: 3 * pop]:
            proposal = self.project(candidates[i][1])
            if self.space.key(proposal) not in seen:
                seen.add(self.space.key(proposal))
                picked.append(proposal)
            if len(picked) == pop:
                break
        while len(picked) < pop:  # the simulator's favourites are all known: explore
            picked.append(self.project(self._uniform(1)[0]))
        return np.stack(picked)

    def log_fields(self) -> dict[str, Any]:
        return {
            "noise": round(self.noise, 4),
            "sim_loss": [round(v, 5) for v in self.sim_loss],
        }

    # ---- state ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        nets = {
            "agents": self.agents.state_dict(),
            "sim": self.sim.state_dict(),
            "buffer": torch.as_tensor(self.buffer.data[: self.buffer.size]),
        }
        return {
            **super().state_dict(),
            "batch": self.batch.tolist(),
            "X": self.X,
            "y": _finite(np.asarray(self.y)),
            "noise": self.noise,
            "baseline": self.baseline,
            "episodes_done": self.episodes_done,
            "buffer_head": self.buffer.head,
            "y_scale": [self.y_mean, self.y_std],
            "sim_loss": self.sim_loss,
            "networks": _pack(nets),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.batch = np.asarray(state["batch"], dtype=np.float64)
        self.X, self.y = state["X"], _array(state["y"]).tolist()
        self.noise, self.baseline = float(state["noise"]), state["baseline"]
        self.episodes_done = int(state["episodes_done"])
        self.y_mean, self.y_std = state["y_scale"]
        self.sim_loss = state["sim_loss"]
        nets = _unpack(state["networks"])
        self.agents.load_state_dict(nets["agents"])
        self.sim.load_state_dict(nets["sim"])
        data = nets["buffer"].numpy()
        self.buffer.data[: len(data)] = data
        self.buffer.size, self.buffer.head = len(data), int(state["buffer_head"])
