"""Standard particle swarm optimisation (Kennedy & Eberhart; inertia weight, Shi & Eberhart),
maximising a fitness over a box [lower, upper]^D.

Every dimension d of every particle i has its own velocity and its own random factors:
    v[i,d] = w * v[i,d] + c1 * r1[i,d] * (pbest[i,d] - x[i,d]) + c2 * r2[i,d] * (gbest[d] - x[i,d])
    x[i,d] = clip(x[i,d] + clamp(v[i,d]), lower[d], upper[d])
(the public ACP code updates the velocity of the wrong dimensions; here the whole matrix is
updated at once, so each dimension moves by exactly its own velocity). The inertia w falls
linearly from `inertia[0]` to `inertia[1]` over the cycles; |v| is clamped to
`vmax * (upper - lower)`.

The swarm's whole state (positions, velocities, bests, the generator's state) is plain JSON,
so a search can stop after any cycle and resume with the very same numbers.

Example (a toy fitness whose optimum is x = 0.3):
    >>> s = Swarm([0.0] * 3, [1.0] * 3, particles=8, cycles=40, seed=0)
    >>> for _ in range(40):
    ...     s.tell([-float(((p - 0.3) ** 2).sum()) for p in s.positions])
    ...     s.move()
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

PSO_DEFAULTS: dict[str, Any] = {
    "particles": 10,
    "cycles": 10,
    "inertia": [0.9, 0.4],  # start, end: falling over the cycles
    "c1": 2.0,
    "c2": 2.0,
    "vmax": 0.2,  # velocity clamp as a fraction of each dimension's range
    "spread": 0.1,  # initial scatter around the start points (fraction of the range)
    "seed": 0,
}


class Swarm:
    def __init__(
        self,
        lower: Sequence[float],
        upper: Sequence[float],
        particles: int = 10,
        cycles: int = 10,
        inertia: Sequence[float] = (0.9, 0.4),
        c1: float = 2.0,
        c2: float = 2.0,
        vmax: float = 0.2,
        seed: int = 0,
    ) -> None:
        self.lower = np.asarray(lower, dtype=np.float64)
        self.upper = np.asarray(upper, dtype=np.float64)
        if self.lower.shape != self.upper.shape or np.any(self.lower > self.upper):
            raise ValueError(
                "Swarm: lower and upper must have one value per dimension, lower <= upper"
            )
        if particles < 1 or cycles < 1:
            raise ValueError(f"Swarm: particles={particles}, cycles={cycles}; both must be >= 1")
        self.particles, self.cycles = int(particles), int(cycles)
        self.inertia = (float(inertia[0]), float(inertia[1]))
        self.c1, self.c2, self.vmax = float(c1), float(c2), float(vmax)
        self.rng = np.random.default_rng(seed)
        dims = len(self.lower)
        self.positions = self.lower + self.rng.random((particles, dims)) * (self.upper - self.lower)
        self.velocities = np.zeros((particles, dims))
        self.pbest = self.positions.copy()
        self.pbest_fitness = np.full(particles, -np.inf)
        self.gbest = self.positions[0].copy()
        self.gbest_fitness = -np.inf
        self.cycle = 0  # cycles completed (tell + move)

    # ---- start ------------------------------------------------------------------------------
    def start_around(self, centers: Sequence[Sequence[float]], spread: float = 0.1) -> None:
        """Particle k starts at centers[k] exactly while there are centers, the others
        scattered uniformly by +-spread (of each range) around the centers in turn."""
        span = self.upper - self.lower
        for i in range(self.particles):
            c = np.asarray(centers[i % len(centers)], dtype=np.float64)
            jitter = 0.0 if i < len(centers) else self.rng.uniform(-spread, spread, c.shape) * span
            self.positions[i] = np.clip(c + jitter, self.lower, self.upper)
        self.pbest = self.positions.copy()

    # ---- one cycle ----------------------------------------------------------------------------
    def w(self) -> float:
        """Inertia of the current cycle: linear from inertia[0] to inertia[1]."""
        t = self.cycle / max(1, self.cycles - 1)
        return self.inertia[0] + (self.inertia[1] - self.inertia[0]) * min(1.0, t)

    def tell(self, fitness: Sequence[float]) -> None:
        """Record the fitness of the current positions; update personal and global bests."""
        f = np.asarray(fitness, dtype=np.float64)
        if f.shape != (self.particles,):
            raise ValueError(f"tell: expected {self.particles} fitness values, got {f.shape}")
        better = f > self.pbest_fitness
        self.pbest[better] = self.positions[better]
        self.pbest_fitness[better] = f[better]
        best = int(np.argmax(self.pbest_fitness))
        if self.pbest_fitness[best] > self.gbest_fitness:
            self.gbest_fitness = float(self.pbest_fitness[best])
            self.gbest = self.pbest[best].copy()

    def move(self) -> None:
        """One velocity + position update for every particle and every dimension."""
        shape = self.positions.shape
        r1, r2 = self.rng.random(shape), self.rng.random(shape)
        v = (
            self.w() * self.velocities
            + self.c1 * r1 * (self.pbest - self.positions)
            + self.c2 * r2 * (self.gbest[None, :] - self.positions)
        )
        limit = self.vmax * (self.upper - self.lower)
        self.velocities = np.clip(v, -limit, limit)
        self.positions = np.clip(self.positions + self.velocities, self.lower, self.upper)
        self.cycle += 1

    # ---- state ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "positions": self.positions.tolist(),
            "velocities": self.velocities.tolist(),
            "pbest": self.pbest.tolist(),
            "pbest_fitness": [None if not np.isfinite(v) else float(v) for v in self.pbest_fitness],
            "gbest": self.gbest.tolist(),
            "gbest_fitness": None if not np.isfinite(self.gbest_fitness) else self.gbest_fitness,
            "cycle": self.cycle,
            "rng": self.rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.positions = np.asarray(state["positions"], dtype=np.float64)
        if self.positions.shape != (self.particles, len(self.lower)):
            raise ValueError(
                f"swarm state has shape {self.positions.shape}, this swarm {(self.particles, len(self.lower))}"
            )
        self.velocities = np.asarray(state["velocities"], dtype=np.float64)
        self.pbest = np.asarray(state["pbest"], dtype=np.float64)
        self.pbest_fitness = np.array(
            [-np.inf if v is None else v for v in state["pbest_fitness"]], dtype=np.float64
        )
        self.gbest = np.asarray(state["gbest"], dtype=np.float64)
        g = state["gbest_fitness"]
        self.gbest_fitness = -np.inf if g is None else float(g)
        self.cycle = int(state["cycle"])
        self.rng.bit_generator.state = state["rng"]
