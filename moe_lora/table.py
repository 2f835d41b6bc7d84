"""The results table: its columns, the row builder, and every reader of its structure.

One row per (truth, estimator, setting, n, replicate). The columns are

* the identifiers ``ID_COLUMNS`` (``truth`` is the label's text; ``through`` and ``delta`` are
  its parts, ``delta`` NaN for a drawn truth), then
* one column per scalar field of ``moe_lora.simulate.Record``, in the record's order
  (``stop_reason`` as its name in ``STOP_REASONS``), then
* per-atom columns ``<name>_<i>`` for each array field (``INDEXED``: ``cell_size_j`` per true
  atom j, ``weight_i`` per fitted atom i, ...).

So a field added to ``Record`` is a column without any other change. The readers below
(per-atom columns, dead atoms, cell patterns, the weight/value valley, drawn truths and
families) are the only code that knows how the table is laid out.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import numpy as np
import pandas as pd

from .optimize import STOP_REASONS
from .simulate import Record

#: Identifier columns and their dtypes, in table order (``replicate`` comes from the unit).
ID_COLUMNS = {
    "experiment": object,
    "seed": np.int64,
    "truth": object,
    "through": object,
    "delta": np.float64,
    "estimator": object,
    "extra": np.int64,
    "L": np.int64,
    "L_star": np.int64,
    "n": np.int64,
    "replicate": np.int64,
    "sigma": np.float64,
    "truth_separation": np.float64,
    "truth_gate_strength": np.float64,
    "truth_expert_separation": np.float64,
}

#: Columns that identify a row, in sort order. ``seed``: the seed the truth is drawn at (the
#: truth axis of a study; tables of runs made before it get their manifest's seed when loaded).
KEY_COLUMNS = ["seed", "truth", "estimator", "extra", "n", "replicate"]

#: Array fields of ``Record`` whose per-atom columns take another prefix than the field name.
INDEXED = {"weights": "weight", "restart_risks": "restart_risk"}


def record_rows(record: Record, identifiers: Mapping, replicates) -> pd.DataFrame:
    """The tidy rows, one per replicate, of a ``Record`` with a leading replicate axis.

    Args:
        record: a unit's record (``simulate_replicates``).
        identifiers: a value for every name of ``ID_COLUMNS`` but ``replicate`` (the same for
            every row); ``delta`` may be None.
        replicates: the replicate indices, one per row.

    Returns:
        A DataFrame with the columns described in the module docstring.
    """
    missing = set(ID_COLUMNS) - {"replicate"} - set(identifiers)
    if missing:
        raise ValueError(
            f"identifiers lack {sorted(missing)}; expected every name of ID_COLUMNS but 'replicate'"
        )
    replicates = np.asarray(replicates, dtype=np.int64)
    R = len(replicates)
    cols: dict = {}
    for name, dtype in ID_COLUMNS.items():
        if name == "replicate":
            cols[name] = replicates
        elif dtype is object:
            cols[name] = [identifiers[name]] * R
        else:
            value = identifiers[name]
            cols[name] = np.full(R, np.nan if value is None else value, dtype=dtype)
    r = jax.device_get(record)
    indexed = []
    for name, value in zip(Record._fields, r):
        value = np.asarray(value)
        if value.ndim == 2:
            indexed.append((INDEXED.get(name, name), value))
        elif name == "stop_reason":
            cols[name] = [STOP_REASONS[int(s)] for s in value]
        else:
            kind = value.dtype.kind
            cols[name] = value.astype(
                bool if kind == "b" else np.int64 if kind in "iu" else np.float64
            )
    for prefix, value in indexed:
        for j in range(value.shape[1]):
            cols[f"{prefix}_{j}"] = value[:, j]
    return pd.DataFrame(cols)


def sort_rows(df: pd.DataFrame, key_columns=KEY_COLUMNS) -> pd.DataFrame:
    """The table in its canonical row order (``key_columns``, stable)."""
    return df.sort_values(list(key_columns), kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# Readers


def indexed_columns(df: pd.DataFrame, prefix: str) -> list[str]:
    """The table's per-atom columns ``<prefix>0``, ``<prefix>1``, ... in index order.

    >>> indexed_columns(pd.DataFrame(columns=["cell_10", "cell_size_0", "cell_2"]), "cell_")
    ['cell_2', 'cell_10']
    """
    cols = [c for c in df.columns if c.startswith(prefix) and c[len(prefix) :].isdigit()]
    return sorted(cols, key=lambda c: int(c[len(prefix) :]))


def single_truths(df: pd.DataFrame) -> pd.DataFrame:
    """Rows of the drawn truths (``delta`` NaN): the curves of figures 1-3 and of
    ``slope_table``."""
    return df[df["delta"].isna()] if "delta" in df else df


def families(df: pd.DataFrame) -> pd.DataFrame:
    """Rows of the truths in a family: the members with a ``delta`` and their drawn truth, whose
    ``delta`` is set to 1 (empty if the table has no family)."""
    if "delta" not in df or df["delta"].isna().all():
        return df.iloc[:0]
    fam = df[df["through"].isin(df.loc[df["delta"].notna(), "through"].unique())]
    return fam.assign(delta=fam["delta"].fillna(1.0))


def pooled_truth(df: pd.DataFrame) -> pd.Series:
    """Per row, the truth label with a family's members pooled as ``<through>@delta=*``."""
    if "delta" not in df:
        return df["truth"]
    return df["truth"].where(df["delta"].isna(), df["through"] + "@delta=*")


def multi_cell(df: pd.DataFrame) -> pd.Series:
    """Per row: some true atom's Voronoi cell holds more than one fitted atom (NaN if unknown)."""
    cols = indexed_columns(df, "cell_size_")
    if not cols:
        return pd.Series(np.nan, index=df.index)
    sizes = df[cols].to_numpy(float)
    if "L_star" in df:  # only the L* true atoms' cells are meaningful
        sizes = np.where(
            np.arange(len(cols))[None, :] < df["L_star"].to_numpy()[:, None], sizes, np.nan
        )
    return pd.Series((sizes > 1).any(axis=1).astype(float), index=df.index)


def dead_atoms(df: pd.DataFrame, *, threshold: float = 1e-3) -> pd.Series:
    """Per row, the number of fitted atoms whose weight pi_i is below ``threshold``.

    Rows of fits with fewer atoms than the table's widest fit have NaN weights there; those
    slots are not counted.
    """
    w = df[indexed_columns(df, "weight_")].to_numpy(float)
    return pd.Series(np.sum(w < threshold, axis=1), index=df.index, name="dead_atoms")


def cell_patterns(df: pd.DataFrame) -> pd.Series:
    """Per row, the sizes of the true atoms' Voronoi cells as a string, e.g. ``"2+1"``.

    Atom j's cell holds the fitted atoms nearest to true atom j; ``"2+1"`` means two fitted atoms
    share the cell of true atom 0 and one sits in atom 1's cell. ``"0+..."`` marks a true atom no
    fitted atom is near.
    """
    sizes = df[indexed_columns(df, "cell_size_")].to_numpy()
    return pd.Series(
        ["+".join(str(int(v)) for v in row if not np.isnan(v)) for row in sizes.astype(float)],
        index=df.index,
        name="cells",
    )


def value_valley(df: pd.DataFrame) -> pd.DataFrame:
    """One row per fitted atom: its weight pi_i and ||V_i||, with the row's identifiers.

    Vanilla LoRA's weight/value valley (docs/model.md, "Identifiability") shows as atoms with a
    small weight and a large ||V_i|| in the same cell as another atom.
    """
    ids = [
        c
        for c in ("variant", "truth", "estimator", "extra", "n", "replicate", "certified")
        if c in df
    ]
    parts = []
    for w, v, c in zip(
        indexed_columns(df, "weight_"),
        indexed_columns(df, "value_norm_"),
        indexed_columns(df, "cell_"),
    ):
        part = df[ids].copy()
        part["atom"] = int(w.split("_")[1])
        part["weight"], part["value_norm"], part["cell"] = (
            df[w].to_numpy(),
            df[v].to_numpy(),
            df[c].to_numpy(),
        )
        parts.append(part)
    out = pd.concat(parts, ignore_index=True)
    return out[out["weight"].notna()].reset_index(drop=True)
