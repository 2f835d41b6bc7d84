"""The data-efficiency figure of the attention-head simulation (``moe_lora.head``); draws, saves nothing."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.ticker import NullFormatter

from .head import STUDENTS, data_efficiency, mean_bands

COLORS = {"lora": "tab:blue", "replora": "tab:red"}
LABELS = {"lora": "LoRA", "replora": "RepLoRA"}


def figure_data_efficiency(
    table: pd.DataFrame, *, metric: str = "function_error", n_boot: int = 2000, seed: int = 0
) -> plt.Figure:
    """Error against n (left) and against n / n_max (right), both students, mean over seeds with 95% bootstrap bands.

    One row of panels per variation. The right panel marks LoRA's mean error at n_max (dashed)
    and the data-efficiency fraction (dotted vertical; ``moe_lora.head.data_efficiency``).

    Args:
        table: tidy rows of ``moe_lora.head.head_unit`` (columns student, n, seed, the metric, and
            optionally variation). metric: the column drawn. n_boot, seed: bootstrap settings.

    Returns:
        The matplotlib Figure; nothing is saved or shown.
    """
    bands = mean_bands(table, metric=metric, n_boot=n_boot, seed=seed)
    eff = data_efficiency(table, metric=metric, n_boot=n_boot, seed=seed).set_index("variation")
    variations = list(pd.unique(bands["variation"]))
    fig, axes = plt.subplots(len(variations), 2, figsize=(10, 3.6 * len(variations)), squeeze=False)
    for row, variation in zip(axes, variations):
        part = bands[bands["variation"] == variation]
        n_max = part["n"].max()
        for ax, scale in zip(row, (1, n_max)):
            for student in STUDENTS:
                s = part[part["student"] == student]
                x = s["n"] / scale
                ax.plot(x, s["mean"], "o-", color=COLORS[student], label=LABELS[student])
                ax.fill_between(x, s["lo"], s["hi"], color=COLORS[student], alpha=0.25)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ticks = sorted(part["n"].unique())
            # Fractions of n_max as 1/k where they are, so neighbouring labels stay short.
            labels = [f"{t / scale:.3g}" if scale == 1 or t == scale or scale % t else f"1/{scale // t:g}" for t in ticks]
            ax.set_xticks([t / scale for t in ticks], labels)
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_ylabel(metric.replace("_", " "))
            ax.grid(True, which="both", alpha=0.3)
        row[0].set_xlabel("n (sequences)")
        row[0].set_title(f"{variation}: error against n")
        row[0].legend()
        e = eff.loc[variation]
        row[1].axhline(e["lora_at_max"], color=COLORS["lora"], ls="--", lw=1, label="LoRA at n_max")
        if math.isfinite(e["fraction"]):
            row[1].axvline(
                e["fraction"],
                color="k",
                ls=":",
                lw=1,
                label=f"fraction {e['fraction']:.2f} [{e['lo']:.2f}, {e['hi']:.2f}] {e['censored']}".strip(),
            )
        else:
            row[1].text(
                0.03,
                0.05,
                "RepLoRA does not reach LoRA's error at n_max on this grid",
                transform=row[1].transAxes,
                fontsize=8,
            )
        row[1].set_xlabel("n / n_max")
        row[1].set_title(f"{variation}: against the fraction of n_max = {n_max}")
        row[1].legend(fontsize=8)
    fig.tight_layout()
    return fig
