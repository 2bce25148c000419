"""Training recipes: optimiser, schedule and data settings, with the paper's as presets (docs/science.md §4)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

import torch

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "constant")


@dataclass(frozen=True)
class Recipe:
    """How to train. ``pool_size=None`` trains on fresh sequences, each used once (drawn a block
    of batches at a time, ``Trainer.pool_size``); an int keeps a pool of that many sequences and
    re-draws it when used up (the official code's ``max_size``)."""

    optimizer: str = "adamw"
    lr: float = 1e-2
    weight_decay: float = 1e-4
    schedule: str = "cosine"
    steps: int = 1000
    batch_size: int = 1024
    init: str = "zero"
    pool_size: int | None = None
    eval_every: int = 50
    test_size: int = 4096
    stage_split: int | None = None  # stage-wise training (Algorithm 1): the step where stage 2 begins

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer: expected one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule: expected one of {SCHEDULES}, got {self.schedule!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise ValueError(f"lr: expected a positive number, got {self.lr!r}")
        if not (isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay: expected a number >= 0, got {self.weight_decay!r}")
        for name in ("steps", "batch_size", "eval_every", "test_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected a positive int, got {value!r}")
        if self.pool_size is not None and (
            isinstance(self.pool_size, bool) or not isinstance(self.pool_size, int) or self.pool_size < self.batch_size
        ):
            raise ValueError(f"pool_size: expected None or an int >= batch_size={self.batch_size}, got {self.pool_size!r}")
        if self.stage_split is not None and (
            isinstance(self.stage_split, bool) or not isinstance(self.stage_split, int) or not 0 < self.stage_split < self.steps
        ):
            raise ValueError(f"stage_split: expected None or a step strictly between 0 and steps={self.steps}, "
                             f"got {self.stage_split!r}")

    def with_overrides(self, **overrides) -> "Recipe":
        """A copy with the given fields replaced; ``None`` values are ignored."""
        known = {f.name for f in fields(self)}
        unknown = set(overrides) - known
        if unknown:
            raise ValueError(f"recipe: unknown settings {sorted(unknown)}; expected some of {sorted(known)}")
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def to_dict(self) -> dict:
        return asdict(self)

    def make_optimizer(self, params) -> torch.optim.Optimizer:
        params = [p for p in params if p.requires_grad]
        if self.optimizer == "sgd":
            return torch.optim.SGD(params, lr=self.lr, weight_decay=self.weight_decay)
        return torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)

    def lr_factor(self, step: int) -> float:
        """Multiplier of ``lr`` at ``step``: cosine decay to 0 over ``steps`` (optax's), or 1."""
        if self.schedule == "constant":
            return 1.0
        return 0.5 * (1.0 + math.cos(math.pi * min(step, self.steps) / self.steps))


RECIPES: dict[str, Recipe] = {  # keys: names.RECIPES, in that order
    # The demo: the paper model reaches Bayes on the chain in well under a minute on 2 cores.
    "fast": Recipe("adamw", 5e-2, 0.0, "cosine", 1000, 512, "zero", None, eval_every=50, test_size=4096),
    # Figs. 2, 6: SGD lr 1, cosine, zero init, 2^17 steps of 1024, a re-drawn pool of 2^20.
    "paper-sgd": Recipe("sgd", 1.0, 0.0, "cosine", 2**17, 1024, "zero", 2**20, eval_every=1024, test_size=2**16),
    # Figs. 5, 7: AdamW lr 1e-2, wd 1e-4, cosine, 2^16 steps, init 1e-4 N(0, 1).
    "paper-adamw": Recipe("adamw", 1e-2, 1e-4, "cosine", 2**16, 1024, "normal", None, eval_every=512, test_size=2**16),
    # Fig. 8: the standard transformer with MLPs, AdamW lr 1e-2, wd 2e-4, cosine, 4096 steps.
    "paper-standard": Recipe("adamw", 1e-2, 2e-4, "cosine", 4096, 1024, "zero", None, eval_every=64, test_size=2**14),
    # Fig. 9: many random trees, SGD lr 1, constant, 2^14 steps, zero init.
    "paper-trees": Recipe("sgd", 1.0, 0.0, "constant", 2**14, 1024, "zero", None, eval_every=512, test_size=2**13),
    # Algorithm 1 on the reduced model: stage 1 trains only A(1) (A(2) stays beta_0 I), stage 2 only
    # A(2). AdamW, constant: SGD's stage-1 gradient is O(beta_0), so SGD lr 1 leaves softmax(A(1))
    # near uniform after 200 steps (argmax on the parent, mass 0.14); AdamW lr 5e-2 puts 0.99 there.
    "stagewise": Recipe("adamw", 5e-2, 0.0, "constant", 400, 512, "zero", None, eval_every=10, test_size=4096,
                        stage_split=200),
    # The standard presets' default: Fig. 8's AdamW lr 1e-2, wd 2e-4, cosine, at 1000 steps
    "standard": Recipe("adamw", 1e-2, 2e-4, "cosine", 1000, 1024, "zero", None, eval_every=50, test_size=4096),
}


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise ValueError(f"recipe: unknown name {name!r}; expected one of {', '.join(RECIPES)}")
    return RECIPES[name]
