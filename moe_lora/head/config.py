"""The static settings of the attention-head simulation, checked once on construction."""

from __future__ import annotations

import dataclasses

import jax

from .. import checks
from ..model import GATINGS
from ..parameterization import ACTIVATIONS

#: How the teacher's update is drawn: free factors, the learned MLP generator, or the fixed shared
#: maps.
TRUTHS = ("vanilla", "learned_generator", "fixed_maps")
INPUTS = ("gaussian", "uniform")
#: ``lm``: Levenberg-Marquardt from Adam's best point, always kept; ``lm_if_better``: kept only
#: where it does not raise the validation loss (so early stopping still regularises small samples).
FINISHERS = ("none", "lm", "lm_if_better")


@jax.tree_util.register_static
@dataclasses.dataclass(frozen=True)
class HeadConfig:
    """Static settings of the head simulation (validated on construction).

    Args:
        d, d_k, d_v: token, key/query and value dimensions. N: tokens per sequence.
        rank_true: r*, rank of the teacher's updates. rank: r >= r*, rank of every student.
        hidden: width h of the learned generator's MLP (``None``: h = rank).
        separate_trunks: the learned generator has one trunk for the A side and another for the
            B side (the two diagonal inputs of the paper's Figure 1) instead of one shared trunk.
        latent_dim: p, the dimension of each latent of the fixed shared maps.
        activation: the activation of the learned generator and of the fixed maps (``ACTIVATIONS``).
        sigma: noise standard deviation. inputs: token distribution, ``"gaussian"`` N(0, I_d) or
            ``"uniform"`` Uniform[-1, 1]^d.
        gating: ``"softmax"`` or ``"sigmoid"`` attention. truth: one of ``TRUTHS``.
        update_q, update_v: teacher update sizes ||B_Q A_Q||_F / ||W_Q0||_F and ||B_V A_V||_F /
        ||W_V0||_F. learning_rate, steps: Adam's step size and step budget.
        learning_rates: a grid of step sizes tuned per fit on the validation split (``None``: only
            ``learning_rate``). Every start is trained at every rate, and the (start, rate) pair
            with the lowest validation loss, after the finisher, is kept; the record says which
            rate (``HeadRecord.learning_rate``). Each student is tuned on its own fits.
        val_fraction: share of the n sequences held out for early stopping (at least one).
        patience: early stopping after this many steps without a better validation loss.
        starts: random starts per fit. finisher: one of ``FINISHERS``. lm_iterations: its cap.
        lm_chunk: rows per chunk of the finisher's normal equations (``None``: all at once).
        n_test: test sequences for the function error.
    """

    d: int = 16
    d_k: int = 8
    d_v: int = 8
    N: int = 8
    rank_true: int = 2
    rank: int = 2
    hidden: int | None = None
    separate_trunks: bool = False
    latent_dim: int = 2
    activation: str = "tanh"
    sigma: float = 0.1
    inputs: str = "gaussian"
    gating: str = "softmax"
    truth: str = "vanilla"
    update_q: float = 1.0
    update_v: float = 0.5
    learning_rate: float = 1e-2
    learning_rates: tuple[float, ...] | None = None
    steps: int = 2000
    val_fraction: float = 0.2
    patience: int = 200
    starts: int = 2
    finisher: str = "none"
    lm_iterations: int = 100
    lm_chunk: int | None = None
    n_test: int = 512

    def __post_init__(self):
        for name in (
            "d",
            "d_k",
            "d_v",
            "rank_true",
            "rank",
            "latent_dim",
            "steps",
            "patience",
            "starts",
            "lm_iterations",
            "n_test",
        ):
            checks.integer(name, getattr(self, name), minimum=1)
        checks.integer("N", self.N, minimum=1)  # tokens per sequence
        for name in ("hidden", "lm_chunk"):
            if getattr(self, name) is not None:
                checks.integer(name, getattr(self, name), minimum=1)
        if not isinstance(self.separate_trunks, bool):
            raise ValueError(f"separate_trunks must be true or false, got {self.separate_trunks!r}")
        for name, other in (("d", self.d), ("d_k", self.d_k), ("d_v", self.d_v)):
            if self.rank > other:
                raise ValueError(
                    f"Student rank {self.rank} is above {name}={other}; expected rank <= min(d, "
                    "d_k, d_v)"
                )
            if self.rank_true > other:
                raise ValueError(
                    f"Teacher rank {self.rank_true} is above {name}={other}; expected rank_true <= "
                    "min(d, d_k, d_v)"
                )
        if self.rank < self.rank_true:
            raise ValueError(
                f"Student rank {self.rank} is below the teacher's rank_true={self.rank_true}; "
                "expected rank >= rank_true"
            )
        if self.truth == "fixed_maps" and self.rank != self.rank_true:
            raise ValueError(
                f"A fixed_maps truth is drawn through the students' own maps, of rank {self.rank}; "
                f"got rank_true={self.rank_true}, expected rank_true == rank"
            )
        for name in ("sigma", "update_q", "update_v", "learning_rate"):
            checks.positive(name, checks.real(name, getattr(self, name)))
        if self.learning_rates is not None:
            rates = self.learning_rates
            if isinstance(rates, (str, bytes)) or not hasattr(rates, "__len__") or not rates:
                raise ValueError(
                    f"learning_rates must be a non-empty list of positive step sizes, got {rates!r}"
                )
            rates = tuple(
                float(checks.positive("learning_rates", checks.real("learning_rates", r)))
                for r in rates
            )
            if len(set(rates)) != len(rates):
                raise ValueError(f"learning_rates must be distinct, got {list(rates)}")
            object.__setattr__(self, "learning_rates", rates)
        if not (isinstance(self.val_fraction, float) and 0 < self.val_fraction < 1):
            raise ValueError(f"val_fraction must be a float in (0, 1), got {self.val_fraction!r}")
        checks.one_of("activation", self.activation, tuple(ACTIVATIONS))
        checks.one_of("inputs", self.inputs, INPUTS)
        checks.one_of("gating", self.gating, GATINGS)
        checks.one_of("truth", self.truth, TRUTHS)
        checks.one_of("finisher", self.finisher, FINISHERS)

    @property
    def rate_grid(self) -> tuple[float, ...]:
        """The step sizes every start is trained at: ``learning_rates``, or ``(learning_rate,)``."""
        return (self.learning_rate,) if self.learning_rates is None else self.learning_rates

    @property
    def width(self) -> int:
        """h, the width of the learned generator's MLP."""
        return self.rank if self.hidden is None else self.hidden
