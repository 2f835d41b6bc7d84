"""Experiment configurations: a TOML file read into a checked, frozen ``Experiment``.

A config names the model, the truths, the data design, the fits and the estimators of a
sample-size sweep. Everything is checked before any work: an unknown key, a value of the wrong
type or an impossible combination raises ``ConfigError`` naming the key (``data.sizes``, ...).

Example ``quick.toml``::

    name = "quick"
    seed = 0

    [model]            # ModelSpec
    d = 2
    d_out = 1
    r = 1
    gate_scale = 3.0
    gating = "softmax"

    [truth]            # truths are drawn through each non-vanilla estimator (or truth.through)
    components = 2
    min_separation = 0.5
    min_gate_strength = 0.5

    [data]
    sigma = 0.02
    sizes = { min = 100, max = 10000, count = 5 }   # or an explicit list [100, 300, ...]
    replicates = 8

    [fit]
    extra_components = [0, 1]    # settings: exact (L = L*) and over-specified (L = L* + 1)
    stat_tol = 0.01              # stop at statistical precision (0: gradient test only)
    chunk_rows = 16384           # rows per chunk of J^T J (memory at large n); the default
    replicate_batch = 1          # replicates vmapped together inside a unit (the default)

    estimators = ["vanilla", "tanh"]

Estimators: ``vanilla``, ``linear`` (the shared identity map) and the non-linear shared maps
``tanh``, ``sigmoid``, ``gelu``, ``relu``. The truths are drawn through ``truth.through``
(default: every non-vanilla estimator, or ``tanh`` if there is none); every estimator fits every
truth its family contains: vanilla fits all of them, a shared estimator the truth drawn through
itself (same maps). So each reparameterized estimator is compared with vanilla on the same
truth, the same data sets and the same starts.

``[minimax]`` (optional) adds to each drawn truth a family approaching the singular configuration
of MODEL.md section 5: with ``deltas = [0.5, 0.25, ...]`` the truth's atom 1 is moved to
``theta_0 + delta (theta_1 - theta_0)`` in the raw parameters of the parameterization it is drawn
through (gate biases kept), so as delta -> 0 two true atoms merge and their gates and experts
coincide, the configuration where vanilla's derivatives become linearly dependent. The drawn truth
is the member delta = 1 (label ``tanh``); the others are labelled ``tanh@delta=0.25`` etc.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import zlib
from pathlib import Path
from typing import Any

import jax
import numpy as np

from .fit import FitConfig, InitConfig
from .model import ModelSpec
from .optimize import LevenbergMarquardt
from .parameterization import Model, Vanilla, linear, make_model, nonlinear
from .truth import DESIGNS, Design, Truth, draw_truth, make_truth, sample_inputs

ESTIMATORS = ("vanilla", "linear", "tanh", "sigmoid", "gelu", "relu")


class ConfigError(ValueError):
    """A bad experiment config; the message names the offending key."""


# --------------------------------------------------------------------------------------------
# Schema: section -> key -> (type(s), default). ``REQUIRED`` marks keys without a default.

REQUIRED = object()
_NUM = (int, float)

SCHEMA: dict[str, Any] = {
    "": {
        "name": (str, None),
        "description": (str, ""),
        "seed": (int, 0),
        "estimators": (list, REQUIRED),
    },
    "model": {
        "d": (int, REQUIRED),
        "d_out": (int, 1),
        "r": (int, 1),
        "d_k": (int, None),
        "gate_scale": (_NUM, 1.0),
        "gating": (str, "softmax"),
    },
    "truth": {
        "through": (list, None),
        "components": (int, 2),
        "latent_dim": (int, 2),
        "scale": (_NUM, 1.0),
        "min_separation": (_NUM, 0.1),
        "min_gate_strength": (_NUM, 0.1),
        "min_expert_separation": (_NUM, 0.0),
    },
    "data": {
        "sigma": (_NUM, REQUIRED),
        "sizes": ((list, dict), REQUIRED),
        "replicates": (int, REQUIRED),
        "chunk": (int, None),
        "design": (str, "uniform"),
        "design_scale": (_NUM, 1.0),
        "n_eval": (int, 2000),
    },
    "fit": {
        "extra_components": (list, [0]),
        "bound": (_NUM, 5.0),
        "bias_bound": (_NUM, 10.0),
        "max_iter": (int, 2000),
        "gtol": (_NUM, 1e-6),
        "damping": (str, "marquardt"),
        "stat_tol": (_NUM, 0.0),
        "chunk_rows": (int, 16384),
        "replicate_batch": (int, 1),
        "near_truth": (int, 1),
        "random": (int, 0),
        "near_truth_scale": (_NUM, 0.1),
        "random_scale": (_NUM, 1.0),
        "canonicalize": (bool, True),
    },
    "minimax": {
        "deltas": (list, REQUIRED),
    },
    "rates": {
        "n_min": (int, None),
        "n_max": (int, None),
        "bootstrap": (int, 1000),
        "level": (_NUM, 0.95),
    },
}
#: Sections that are None when absent (the others are filled with their defaults).
ABSENT_IS_NONE = ("minimax",)


def _type_name(t) -> str:
    names = {int: "an integer", float: "a number", str: "a string", list: "a list", dict: "a table", bool: "true or false"}
    ts = t if isinstance(t, tuple) else (t,)
    if ts == _NUM:
        return "a number"
    return " or ".join(names[x] for x in ts)


def _check_type(key: str, value, t) -> None:
    ts = t if isinstance(t, tuple) else (t,)
    ok = isinstance(value, ts) and not (isinstance(value, bool) and bool not in ts)
    if not ok:
        raise ConfigError(f"{key}: expected {_type_name(t)}, got {value!r} ({type(value).__name__})")


def _resolve(raw: dict) -> dict:
    """Check keys and types against ``SCHEMA`` and fill defaults; returns a nested dict."""
    # A resolved config (e.g. from a manifest) holds None for absent optional values; TOML has no null.
    raw = {k: ({kk: vv for kk, vv in v.items() if vv is not None} if isinstance(v, dict) and k in SCHEMA else v)
           for k, v in raw.items() if v is not None}
    out: dict[str, Any] = {}
    for key in raw:
        if key not in SCHEMA[""] and key not in SCHEMA:
            known = sorted(k for k in (*SCHEMA[""], *SCHEMA) if k)
            raise ConfigError(f"{key}: unknown key at top level; expected one of {known}")
    for key, (t, default) in SCHEMA[""].items():
        if key in raw:
            _check_type(key, raw[key], t)
            out[key] = raw[key]
        elif default is REQUIRED:
            raise ConfigError(f"{key}: missing required key")
        else:
            out[key] = default
    for section, fields in SCHEMA.items():
        if not section:
            continue
        if section not in raw:
            if section in ABSENT_IS_NONE:
                out[section] = None
                continue
            if any(d is REQUIRED for _, d in fields.values()):
                raise ConfigError(f"[{section}]: missing required section")
            body = {}
        else:
            body = raw[section]
            if not isinstance(body, dict):
                raise ConfigError(f"{section}: expected a table [{section}], got {body!r}")
        for key in body:
            if key not in fields:
                raise ConfigError(f"{section}.{key}: unknown key; expected one of {sorted(fields)}")
        sec = {}
        for key, (t, default) in fields.items():
            if key in body:
                _check_type(f"{section}.{key}", body[key], t)
                sec[key] = body[key]
            elif default is REQUIRED:
                raise ConfigError(f"{section}.{key}: missing required key")
            else:
                sec[key] = default
        out[section] = sec
    return out


def _sizes(spec) -> tuple[int, ...]:
    if isinstance(spec, dict):
        extra = set(spec) - {"min", "max", "count"}
        if extra or len(spec) != 3:
            raise ConfigError(f"data.sizes: expected a list of sizes or a table {{min, max, count}}, got {spec!r}")
        for k in ("min", "max", "count"):
            _check_type(f"data.sizes.{k}", spec[k], _NUM if k != "count" else int)
        lo, hi, count = spec["min"], spec["max"], spec["count"]
        if not (1 <= lo < hi) or count < 2:
            raise ConfigError(f"data.sizes: expected 1 <= min < max and count >= 2, got {spec!r}")
        sizes = np.unique(np.round(np.geomspace(lo, hi, count)).astype(int))
        if len(sizes) != count:
            raise ConfigError(f"data.sizes: {count} log-spaced sizes in [{lo}, {hi}] round to duplicates; lower count")
        return tuple(int(s) for s in sizes)
    for s in spec:
        _check_type("data.sizes[]", s, int)
    if not spec or any(s < 1 for s in spec) or len(set(spec)) != len(spec):
        raise ConfigError(f"data.sizes: expected distinct positive integers, got {spec!r}")
    return tuple(sorted(int(s) for s in spec))


def _positive(key: str, value) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{key}: expected a positive finite number, got {value!r}")


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A checked experiment config. ``raw`` is the resolved config (defaults filled in).

    Build it with ``load_experiment(path)`` or ``Experiment.from_dict(d)``.
    """

    raw: dict
    name: str
    seed: int
    spec: ModelSpec
    estimators: tuple[str, ...]
    truths: tuple[str, ...]
    components: int
    sizes: tuple[int, ...]
    replicates: int
    chunk: int
    sigma: float
    design: Design
    settings: tuple[int, ...]
    deltas: tuple[float, ...] | None

    @classmethod
    def from_dict(cls, raw: dict, name: str = "experiment") -> Experiment:
        c = _resolve(raw)
        m, t, d, f = c["model"], c["truth"], c["data"], c["fit"]
        c["name"] = c["name"] or name
        try:
            spec = ModelSpec(d=m["d"], d_out=m["d_out"], r=m["r"], d_k=m["d"] if m["d_k"] is None else m["d_k"], gating=m["gating"], gate_scale=float(m["gate_scale"]))
        except ValueError as e:
            msg = str(e)
            key = next((k for k in ("gate_scale", "gating", "d_out", "d_k") if k in msg), "r" if "rank r" in msg else "d")
            raise ConfigError(f"model.{key}: {msg}") from None
        estimators = c["estimators"]
        for e in estimators:
            if e not in ESTIMATORS:
                raise ConfigError(f"estimators: unknown estimator {e!r}; expected one of {list(ESTIMATORS)}")
        if not estimators or len(set(estimators)) != len(estimators):
            raise ConfigError(f"estimators: expected a non-empty list without repeats, got {estimators!r}")
        through = t["through"]
        if through is None:
            through = [e for e in estimators if e != "vanilla"] or ["tanh"]
        for e in through:
            if e not in ESTIMATORS or e == "vanilla":
                raise ConfigError(f"truth.through: expected non-vanilla estimators {list(ESTIMATORS[1:])}, got {e!r}")
        for e in estimators:
            if e != "vanilla" and e not in through:
                raise ConfigError(f"estimators: {e!r} fits no truth (truth.through = {through}); a shared estimator only contains the truth drawn through itself")
        if t["components"] < 1:
            raise ConfigError(f"truth.components: expected a positive integer, got {t['components']}")
        if t["latent_dim"] < 1:
            raise ConfigError(f"truth.latent_dim: expected a positive integer, got {t['latent_dim']}")
        for k in ("min_separation", "min_gate_strength", "min_expert_separation"):
            if not (math.isfinite(t[k]) and t[k] >= 0):
                raise ConfigError(f"truth.{k}: expected a finite number >= 0, got {t[k]!r}")
        _positive("truth.scale", t["scale"])
        _positive("data.sigma", d["sigma"])
        _positive("data.design_scale", d["design_scale"])
        if d["design"] not in DESIGNS:
            raise ConfigError(f"data.design: unknown design {d['design']!r}; expected one of {list(DESIGNS)}")
        if d["replicates"] < 1:
            raise ConfigError(f"data.replicates: expected a positive integer, got {d['replicates']}")
        chunk = d["replicates"] if d["chunk"] is None else d["chunk"]
        if chunk < 1:
            raise ConfigError(f"data.chunk: expected a positive integer, got {chunk}")
        if d["n_eval"] < 1:
            raise ConfigError(f"data.n_eval: expected a positive integer, got {d['n_eval']}")
        sizes = _sizes(d["sizes"])
        settings = f["extra_components"]
        for s in settings:
            _check_type("fit.extra_components[]", s, int)
        if not settings or any(s < 0 for s in settings) or len(set(settings)) != len(settings):
            raise ConfigError(f"fit.extra_components: expected distinct integers >= 0 (L - L*), got {settings!r}")
        for k in ("bound", "bias_bound", "gtol", "near_truth_scale", "random_scale"):
            _positive(f"fit.{k}", f[k])
        if f["max_iter"] < 1:
            raise ConfigError(f"fit.max_iter: expected a positive integer, got {f['max_iter']}")
        if f["damping"] not in ("levenberg", "marquardt"):
            raise ConfigError(f"fit.damping: expected 'levenberg' or 'marquardt', got {f['damping']!r}")
        if not (math.isfinite(f["stat_tol"]) and f["stat_tol"] >= 0):
            raise ConfigError(f"fit.stat_tol: expected a finite number >= 0 (0 turns the rule off), got {f['stat_tol']!r}")
        if f["replicate_batch"] < 1:
            raise ConfigError(f"fit.replicate_batch: expected a positive integer (replicates vmapped together), got {f['replicate_batch']!r}")
        if f["chunk_rows"] < 1:
            raise ConfigError(f"fit.chunk_rows: expected a positive integer (rows per chunk of the normal equations), got {f['chunk_rows']!r}")
        if f["near_truth"] < 0 or f["random"] < 0 or f["near_truth"] + f["random"] < 1:
            raise ConfigError(f"fit.near_truth, fit.random: expected counts >= 0 with at least one start, got {f['near_truth']}, {f['random']}")
        deltas = None
        if c["minimax"] is not None:
            deltas = c["minimax"]["deltas"]
            for x in deltas:
                _check_type("minimax.deltas[]", x, _NUM)
            if not deltas or any(not (0 < x <= 1) for x in deltas) or len(set(deltas)) != len(deltas):
                raise ConfigError(f"minimax.deltas: expected distinct numbers in (0, 1], got {deltas!r}")
            if t["components"] < 2:
                raise ConfigError("minimax: the family merges true atoms 0 and 1; truth.components must be >= 2")
            deltas = tuple(float(x) for x in sorted(deltas, reverse=True))
        r = c["rates"]
        if r["bootstrap"] < 1:
            raise ConfigError(f"rates.bootstrap: expected a positive integer, got {r['bootstrap']}")
        if not 0 < r["level"] < 1:
            raise ConfigError(f"rates.level: expected a number in (0, 1), got {r['level']}")
        return cls(
            raw=c,
            name=c["name"],
            seed=c["seed"],
            spec=spec,
            estimators=tuple(estimators),
            truths=tuple(through),
            components=t["components"],
            sizes=sizes,
            replicates=d["replicates"],
            chunk=min(chunk, d["replicates"]),
            sigma=float(d["sigma"]),
            design=Design(d["design"], float(d["design_scale"])),
            settings=tuple(settings),
            deltas=deltas,
        )

    # ----------------------------------------------------------------------------------------
    def fit_config(self, extra: int) -> FitConfig:
        """The ``FitConfig`` of a setting with L = L* + extra fitted components."""
        f = self.raw["fit"]
        finisher = LevenbergMarquardt(
            max_iter=f["max_iter"], gtol=float(f["gtol"]), damping=f["damping"],
            stat_tol=float(f["stat_tol"]) or None, chunk_size=f["chunk_rows"],
        )
        init = InitConfig(
            near_truth=f["near_truth"],
            random=f["random"],
            near_truth_scale=float(f["near_truth_scale"]),
            random_scale=float(f["random_scale"]),
        )
        return FitConfig(n_components=self.components + extra, finisher=finisher, init=init, canonicalize=f["canonicalize"])

    def keys(self):
        """(maps, truth, eval, sim) keys, all derived from ``seed``."""
        return jax.random.split(jax.random.key(self.seed), 4)

    def model(self, name: str) -> Model:
        """The estimator ``name`` with its fixed maps (drawn from the seed and the name)."""
        f, t = self.raw["fit"], self.raw["truth"]
        bounds = dict(bound=float(f["bound"]), bias_bound=float(f["bias_bound"]))
        if name == "vanilla":
            return make_model(self.spec, Vanilla(**bounds))
        param = linear(t["latent_dim"], **bounds) if name == "linear" else nonlinear(name, t["latent_dim"], **bounds)
        key = jax.random.fold_in(self.keys()[0], ESTIMATORS.index(name))
        return make_model(self.spec, param, key=key)

    def draw_truths(self) -> dict[str, Truth]:
        """Truth label -> Truth: one per ``truths`` entry, or per (entry, delta) for minimax."""
        t = self.raw["truth"]
        out = {}
        for through in self.truths:
            model = self.model(through)
            key = jax.random.fold_in(self.keys()[1], ESTIMATORS.index(through))
            try:
                truth = draw_truth(
                    key, model, self.components, scale=float(t["scale"]), min_separation=float(t["min_separation"]),
                    min_gate_strength=float(t["min_gate_strength"]), min_expert_separation=float(t["min_expert_separation"]),
                    design=self.design,
                )
            except ValueError as e:
                raise ConfigError(f"[truth] (through {through}): {e}") from None
            out[through] = truth
            for delta in self.deltas or ():
                if delta == 1:
                    continue  # the drawn truth itself
                params = truth.params
                moved = type(params)(*(
                    p if name == "c" else p.at[1].set(p[0] + delta * (p[1] - p[0]))
                    for name, p in zip(params._fields, params)
                ))
                try:
                    out[truth_label(through, delta)] = make_truth(model, moved, design=self.design)
                except ValueError as e:
                    raise ConfigError(f"minimax.deltas: delta={delta} gives {e}") from None
        return out

    def x_eval(self):
        """Fixed held-out inputs for the L2 error."""
        return sample_inputs(self.keys()[2], self.raw["data"]["n_eval"], self.spec.d, self.design)

    def sim_key(self, truth_label: str):
        """Simulation key of one truth: shared by all its estimators and settings (paired data)."""
        return jax.random.fold_in(self.keys()[3], _stable_index(truth_label))

    def pairs(self) -> list[tuple[str, str]]:
        """(truth label, estimator) pairs that are fitted: an estimator fits the truths it contains."""
        labels = list(self.draw_truth_labels())
        return [(lab, e) for lab in labels for e in self.estimators if e == "vanilla" or parse_truth_label(lab)[0] == e]

    def draw_truth_labels(self) -> list[str]:
        """``through`` for every drawn truth, then ``through@delta=...`` for its family members."""
        return [lab for t in self.truths for lab in [t] + [truth_label(t, d) for d in self.deltas or () if d != 1]]


def truth_label(through: str, delta: float | None = None) -> str:
    """``tanh`` or ``tanh@delta=0.25``."""
    return through if delta is None else f"{through}@delta={delta:g}"


def parse_truth_label(label: str) -> tuple[str, float | None]:
    """Inverse of ``truth_label``: ``"tanh@delta=0.25"`` -> ("tanh", 0.25), ``"tanh"`` -> ("tanh", None)."""
    through, _, delta = label.partition("@delta=")
    return through, float(delta) if delta else None


def _stable_index(label: str) -> int:
    """A deterministic 31-bit integer of a label (Python's ``hash`` is salted per process)."""
    return zlib.crc32(label.encode()) & 0x7FFFFFFF


def load_experiment(path: str | Path) -> Experiment:
    """Read and check a TOML config; errors name the file and the key."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    try:
        return Experiment.from_dict(raw, name=path.stem)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
