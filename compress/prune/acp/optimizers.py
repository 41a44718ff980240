"""Optimisers of per-unit keep ratios, one interface, so the search loop (search.py) runs any.

An optimiser proposes a batch of ratio vectors (`ask`, pure: the same call gives the same
batch), is told their fitness (`tell`, which also prepares the next batch), and keeps its
whole state in plain JSON (`state_dict`), so a search stops after any generation and resumes
with the very same numbers. `project` maps ratios onto the budget (search.py: a common scale
so the FLOPs meet the target); the random and genetic searches propose only structures at
the budget through it.

  pso     the particle swarm (pso.py), started around the clustered and budget structures
  random  uniform random ratios in [lower, upper] scaled to the budget: the baseline
  ga      a genetic algorithm: tournament selection, uniform or blend (BLX-alpha) crossover,
          gaussian mutation, elitism; children are scaled to the budget
  ddpg    two DDPG agents (double actors, clipped double critics) set the ratios unit by
          unit; an LSTM simulator trained on the real evaluations scores their episodes, and
          only the simulator's best new structures are evaluated (ddpg.py)
  adversarial  a generator of soft channel gates trained against a discriminator of the
          unpruned model's outputs plus a FLOPs term; samples of it are evaluated and the
          Pareto front of (pruned channels, fitness) steers it (adversarial.py)

`generations(evaluations)`: a shared evaluation budget (fitness lookups) becomes the number of
whole generations that fit in it, so every optimiser gets at most the same number.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np

from compress.prune.acp.pso import PSO_DEFAULTS, Swarm

Project = Callable[[np.ndarray], np.ndarray]

RANDOM_DEFAULTS: dict[str, Any] = {"population": 10, "generations": 10, "seed": 0}
GA_DEFAULTS: dict[str, Any] = {
    "population": 10,
    "generations": 10,
    "elite": 2,  # the best this many go to the next generation unchanged (not re-evaluated)
    "tournament": 3,  # candidates per tournament
    "crossover": "blend",  # blend (BLX-alpha) | uniform
    "crossover_rate": 0.9,
    "alpha": 0.3,  # BLX-alpha: children within the parents' interval widened by alpha
    "mutation_rate": 0.2,  # per gene
    "mutation_sigma": 0.1,  # gaussian step as a fraction of the gene's range
    "seed": 0,
}
CROSSOVERS = ("blend", "uniform")


def _finite(values: np.ndarray) -> list[float | None]:
    return [float(v) if np.isfinite(v) else None for v in values]


def _array(values: Sequence[float | None]) -> np.ndarray:
    return np.array([-np.inf if v is None else v for v in values], dtype=np.float64)


def _whole(evaluations: int, batch: int, name: str, what: str) -> int:
    if int(evaluations) < batch:
        raise ValueError(
            f"{name}: {evaluations} evaluations do not hold one generation of {batch}; "
            f"lower {name}.{what} or raise evaluations"
        )
    return int(evaluations) // batch


class Optimizer(ABC):
    """Base: bounds, the budget projection, the generation counter and the best so far."""

    name: ClassVar[str]
    defaults: ClassVar[dict[str, Any]]

    def __init__(
        self,
        lower: np.ndarray,
        upper: np.ndarray,
        cfg: dict[str, Any],
        project: Project,
        evaluations: int | None = None,
    ) -> None:
        self.lower, self.upper = np.asarray(lower, float), np.asarray(upper, float)
        self.cfg, self.project = cfg, project
        self.rng = np.random.default_rng(int(cfg["seed"]))
        self.generation = 0
        self.total = self.generations(evaluations)
        self.best_position = self.lower.copy()
        self.best_fitness = -np.inf

    def generations(self, evaluations: int | None) -> int:
        """Whole generations that fit in `evaluations` lookups (None: the optimiser's own)."""
        if evaluations is None:
            return int(self.cfg["generations"])
        return _whole(evaluations, int(self.cfg["population"]), self.name, "population")

    def proposals(self) -> int:
        """Lookups of the whole run (what a progress bar counts to)."""
        return self.total * int(self.cfg["population"])

    @property
    def finished(self) -> bool:
        return self.generation >= self.total

    @abstractmethod
    def start(self, starts: dict[str, np.ndarray]) -> None:
        """Set the first batch; `starts` are structures the search suggests (cluster, budget)."""

    @abstractmethod
    def ask(self) -> np.ndarray:
        """The batch of ratio vectors to evaluate next (the same until `tell`)."""

    @abstractmethod
    def tell(self, fitness: Sequence[float]) -> None:
        """The fitness of the batch `ask` gave, in its order; prepares the next batch."""

    def bind(self, space: Any) -> None:
        """The model-side view of the search (space.Space: layer features, a FLOPs model, the
        model and images), given before `start` or `load_state_dict`. The learned optimisers
        (ddpg, adversarial) build on it; the others never look, so it costs them nothing."""
        self.space = space

    def log_fields(self) -> dict[str, Any]:
        """Extra per-generation figures for the search history."""
        return {}

    def _record_best(self, positions: np.ndarray, fitness: np.ndarray) -> None:
        i = int(np.argmax(fitness))
        if fitness[i] > self.best_fitness:
            self.best_fitness, self.best_position = float(fitness[i]), positions[i].copy()

    def _uniform(self, n: int) -> np.ndarray:
        return self.lower + self.rng.random((n, len(self.lower))) * (self.upper - self.lower)

    def state_dict(self) -> dict[str, Any]:
        return {
            "generation": self.generation,
            "best_position": self.best_position.tolist(),
            "best_fitness": None if not np.isfinite(self.best_fitness) else self.best_fitness,
            "rng": self.rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generation = int(state["generation"])
        self.best_position = np.asarray(state["best_position"], dtype=np.float64)
        b = state["best_fitness"]
        self.best_fitness = -np.inf if b is None else float(b)
        self.rng.bit_generator.state = state["rng"]


class LearnedOptimizer(Optimizer):
    """Base of the optimisers that learn from every structure evaluated so far (ddpg,
    adversarial): the history `X` / `y`, one batch of proposals at a time, and `update`
    after each `tell` (not after the last generation: nothing would use it)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.X: list[list[float]] = []  # every structure evaluated (projected ratios) ...
        self.y: list[float] = []  # ... and its real fitness
        self.batch = np.empty((0, len(self.lower)))

    def first_batch(self, starts: dict[str, np.ndarray], draw: Callable[[int], np.ndarray]) -> None:
        """The budget structure (when the search suggests one), then `draw(n)` ratios."""
        pop = int(self.cfg["population"])
        seeds = [self.project(starts["budget"])] if "budget" in starts else []
        drawn = [self.project(r) for r in draw(pop - len(seeds))]
        self.batch = np.stack([*seeds, *drawn])[:pop]

    def ask(self) -> np.ndarray:
        return self.batch

    def tell(self, fitness: Sequence[float]) -> None:
        f = np.asarray(fitness, dtype=np.float64)
        self._record_best(self.batch, f)
        self.X += self.batch.tolist()
        self.y += f.tolist()
        self.generation += 1
        if not self.finished:
            self.update(f)

    @abstractmethod
    def update(self, fitness: np.ndarray) -> None:
        """Learn from the history (the last batch scored `fitness`); set the next batch."""


class SwarmOptimizer(Optimizer):
    """The particle swarm of pso.py behind the optimiser interface (its state is the swarm's)."""

    name = "pso"
    defaults = PSO_DEFAULTS

    def __init__(self, lower, upper, cfg, project, evaluations=None) -> None:
        super().__init__(lower, upper, cfg, project, evaluations)
        self.swarm = Swarm(
            lower,
            upper,
            cfg["particles"],
            self.total,
            cfg["inertia"],
            cfg["c1"],
            cfg["c2"],
            cfg["vmax"],
            cfg["seed"],
        )

    def generations(self, evaluations: int | None) -> int:
        if evaluations is None:
            return int(self.cfg["cycles"])
        return _whole(evaluations, int(self.cfg["particles"]), self.name, "particles")

    def proposals(self) -> int:
        return self.total * int(self.cfg["particles"])

    def start(self, starts: dict[str, np.ndarray]) -> None:
        self.swarm.start_around(list(starts.values()), float(self.cfg["spread"]))

    def ask(self) -> np.ndarray:
        return self.swarm.positions

    def tell(self, fitness: Sequence[float]) -> None:
        self.swarm.tell(fitness)
        self.inertia = self.swarm.w()
        self.best_fitness, self.best_position = self.swarm.gbest_fitness, self.swarm.gbest
        self.swarm.move()
        self.generation = self.swarm.cycle

    def log_fields(self) -> dict[str, Any]:
        return {"inertia": round(self.inertia, 4)}  # what the finished cycle flew with

    def state_dict(self) -> dict[str, Any]:
        return {"swarm": self.swarm.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.swarm.load_state_dict(state["swarm"])
        self.generation = self.swarm.cycle
        self.best_fitness, self.best_position = self.swarm.gbest_fitness, self.swarm.gbest


class RandomOptimizer(Optimizer):
    """Uniform random ratios per unit, each vector scaled onto the budget."""

    name = "random"
    defaults = RANDOM_DEFAULTS

    def start(self, starts: dict[str, np.ndarray]) -> None:
        self.batch = self._draw()

    def _draw(self) -> np.ndarray:
        return np.stack([self.project(r) for r in self._uniform(int(self.cfg["population"]))])

    def ask(self) -> np.ndarray:
        return self.batch

    def tell(self, fitness: Sequence[float]) -> None:
        self._record_best(self.batch, np.asarray(fitness, dtype=np.float64))
        self.generation += 1
        if not self.finished:
            self.batch = self._draw()

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "batch": self.batch.tolist()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.batch = np.asarray(state["batch"], dtype=np.float64)


class GeneticOptimizer(Optimizer):
    """A generational GA with elitism. Generation 0 evaluates the whole population (the budget
    start, then uniform random structures at the budget); each later one evaluates
    `population - elite` children bred from the current population, and the next population
    is the elites plus the children."""

    name = "ga"
    defaults = GA_DEFAULTS

    def __init__(self, lower, upper, cfg, project, evaluations=None) -> None:
        pop, elite = int(cfg["population"]), int(cfg["elite"])
        if pop < 2 or not 0 <= elite < pop:
            raise ValueError(
                f"ga: needs population >= 2 and 0 <= elite < population "
                f"(got population {pop}, elite {elite})"
            )
        if cfg["crossover"] not in CROSSOVERS:
            raise ValueError(f"ga.crossover {cfg['crossover']!r}; known: {', '.join(CROSSOVERS)}")
        if int(cfg["tournament"]) < 1:
            raise ValueError(f"ga.tournament {cfg['tournament']}: at least 1")
        super().__init__(lower, upper, cfg, project, evaluations)

    def generations(self, evaluations: int | None) -> int:
        if evaluations is None:
            return int(self.cfg["generations"])
        pop, children = int(self.cfg["population"]), self._children()
        _whole(evaluations, pop, self.name, "population")
        return 1 + (int(evaluations) - pop) // children

    def _children(self) -> int:
        return int(self.cfg["population"]) - int(self.cfg["elite"])

    def proposals(self) -> int:
        return int(self.cfg["population"]) + (self.total - 1) * self._children()

    def start(self, starts: dict[str, np.ndarray]) -> None:
        pop = int(self.cfg["population"])
        seeds = [self.project(starts["budget"])] if "budget" in starts else []
        drawn = [self.project(r) for r in self._uniform(pop - len(seeds))]
        self.population = np.stack([*seeds, *drawn])[:pop]
        self.fitness = np.full(pop, -np.inf)
        self.batch = self.population.copy()

    def ask(self) -> np.ndarray:
        return self.batch

    def tell(self, fitness: Sequence[float]) -> None:
        f = np.asarray(fitness, dtype=np.float64)
        if self.generation == 0:
            self.population, self.fitness = self.batch.copy(), f
        else:
            order = np.argsort(-self.fitness, kind="stable")[: int(self.cfg["elite"])]
            self.population = np.concatenate([self.population[order], self.batch])
            self.fitness = np.concatenate([self.fitness[order], f])
        self._record_best(self.population, self.fitness)
        self.generation += 1
        if not self.finished:
            self.batch = np.stack([self._child() for _ in range(self._children())])

    # ---- breeding -------------------------------------------------------------------------
    def _select(self) -> np.ndarray:
        """Tournament: the fittest of `tournament` members drawn with replacement."""
        picks = self.rng.integers(0, len(self.population), int(self.cfg["tournament"]))
        return self.population[picks[int(np.argmax(self.fitness[picks]))]]

    def _crossover(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        if self.rng.random() >= float(self.cfg["crossover_rate"]):
            return a.copy()
        if self.cfg["crossover"] == "uniform":
            return np.where(self.rng.random(a.shape) < 0.5, a, b)
        lo, hi = np.minimum(a, b), np.maximum(a, b)
        reach = float(self.cfg["alpha"]) * (hi - lo)
        return self.rng.uniform(lo - reach, hi + reach)

    def _mutate(self, x: np.ndarray) -> np.ndarray:
        hit = self.rng.random(x.shape) < float(self.cfg["mutation_rate"])
        step = self.rng.normal(0.0, float(self.cfg["mutation_sigma"]), x.shape)
        return np.where(hit, x + step * (self.upper - self.lower), x)

    def _child(self) -> np.ndarray:
        child = self._mutate(self._crossover(self._select(), self._select()))
        return self.project(np.clip(child, self.lower, self.upper))

    def log_fields(self) -> dict[str, Any]:
        return {"population_mean": float(np.mean(self.fitness))}

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "population": self.population.tolist(),
            "fitness": _finite(self.fitness),
            "batch": self.batch.tolist(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.population = np.asarray(state["population"], dtype=np.float64)
        self.fitness = _array(state["fitness"])
        self.batch = np.asarray(state["batch"], dtype=np.float64)


OPTIMIZERS: dict[str, type[Optimizer]] = {
    o.name: o for o in (SwarmOptimizer, RandomOptimizer, GeneticOptimizer)
}


def register(cls: type[Optimizer]) -> type[Optimizer]:
    """Class decorator: add an optimiser defined in its own module (ddpg.py, adversarial.py;
    search.py imports them, so they are registered before any search runs)."""
    OPTIMIZERS[cls.name] = cls
    return cls
