"""The figure of an attention-head study (``moe_lora.head``): error against n and the paired
log-ratios; saves nothing."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.ticker import NullFormatter

from .head import HEAD_SLOPES, REFERENCE, data_efficiency, error_bands, improvement, rate_slopes
from .palette import STUDENT_COLORS, estimator_marker
from .slopes import SlopeSettings, settings

COLORS = STUDENT_COLORS
LABELS = {
    "lora": "LoRA",
    "learned_generator": "learned generator",
    "fixed_maps": "fixed shared maps",
}


def figure_data_efficiency(
    table: pd.DataFrame, *, metric: str = "function_error", n_boot: int = 2000, seed: int = 0
) -> plt.Figure:
    """Per variation: the median error against n with 95% bootstrap bands (left), and the paired
    per-seed log-ratio log(e_candidate / e_LoRA), its median with a 95% interval (right).

    The right panel's title gives ``n_ratio`` (``moe_lora.head.data_efficiency``): the share of
    n_max at which the candidate's fitted power law reaches LoRA's fitted error at n_max.

    Args:
        table: tidy rows of ``moe_lora.head.head_unit`` (columns student, n, seed, the metric, and
            optionally variation). metric: the column drawn. n_boot, seed: bootstrap settings.

    Returns:
        The matplotlib Figure; nothing is saved or shown.
    """
    bands = error_bands(table, metric=metric, n_boot=n_boot, seed=seed)
    ratios = improvement(table, metric=metric, n_boot=n_boot, seed=seed)
    eff = data_efficiency(table, metric=metric, n_boot=n_boot, seed=seed)
    variations = list(pd.unique(bands["variation"]))
    fig, axes = plt.subplots(len(variations), 2, figsize=(10, 3.6 * len(variations)), squeeze=False)
    for (left, right), variation in zip(axes, variations):
        part = bands[bands["variation"] == variation]
        for student in pd.unique(part["student"]):
            s = part[part["student"] == student]
            color = COLORS.get(student)
            left.plot(
                s["n"],
                s["center"],
                "-",
                marker=estimator_marker(student),
                color=color,
                label=LABELS.get(student, student),
            )
            left.fill_between(s["n"], s["lo"], s["hi"], color=color, alpha=0.25)
        left.set_yscale("log")
        left.set_ylabel(f"{metric.replace('_', ' ')} (median)")
        left.set_title(f"{variation}: error against n")
        left.legend(fontsize=8)
        r = ratios[ratios["variation"] == variation]
        titles = []
        for candidate in pd.unique(r["candidate"]):
            c = r[r["candidate"] == candidate]
            color = COLORS.get(candidate)
            right.plot(
                c["n"],
                c["log_ratio_median"],
                "-",
                marker=estimator_marker(candidate),
                color=color,
                label=LABELS.get(candidate, candidate),
            )
            right.fill_between(
                c["n"], c["log_ratio_median_lo"], c["log_ratio_median_hi"], color=color, alpha=0.25
            )
            e = eff[(eff["variation"] == variation) & (eff["candidate"] == candidate)].iloc[0]
            if math.isfinite(e["n_ratio"]):
                titles.append(
                    f"n_ratio {e['n_ratio']:.2f} [{e['n_ratio_lo']:.2f}, {e['n_ratio_hi']:.2f}]"
                )
        right.axhline(0, color=COLORS[REFERENCE], ls="--", lw=1, label="equal to LoRA")
        right.set_ylabel(f"log({metric.replace('_', ' ')} / LoRA's), median over seeds")
        right.set_title(
            f"{variation}: paired log-ratio" + (f"; {', '.join(titles)}" if titles else ""),
            fontsize=9,
        )
        right.legend(fontsize=8)
        for ax in (left, right):
            ax.set_xscale("log")
            ticks = sorted(part["n"].unique())
            ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xlabel("n (sequences)")
            ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    return fig


def figure_rates(
    table: pd.DataFrame,
    *,
    metrics=("function_error", "gate_error", "value_error"),
    slopes: SlopeSettings | None = None,
    **overrides,
) -> plt.Figure:
    """Per variation (rows) and metric (columns): the median error of each student against n,
    log-log, with bootstrap bands, and the fitted slope on n >= n_min in the legend
    (``moe_lora.head.rate_slopes``, with ``slopes``: default ``HEAD_SLOPES``, or its fields as
    keywords).

    Returns:
        The matplotlib Figure; nothing is saved or shown.
    """
    fit = settings(HEAD_SLOPES if slopes is None else slopes, overrides)
    slopes = rate_slopes(table, metrics=metrics, slopes=fit)
    variations = list(pd.unique(slopes["variation"]))
    sizes = sorted(table["n"].unique())
    fig, axes = plt.subplots(
        len(variations),
        len(metrics),
        figsize=(4.2 * len(metrics), 3.4 * len(variations)),
        squeeze=False,
    )
    for row, variation in zip(axes, variations):
        for ax, metric in zip(row, metrics):
            bands = error_bands(
                table[table["variation"] == variation] if "variation" in table else table,
                metric=metric,
                n_boot=fit.bootstrap,
                seed=fit.seed,
                level=fit.level,
            )
            for student in pd.unique(bands["student"]):
                b = bands[bands["student"] == student]
                s = slopes[
                    (slopes["variation"] == variation)
                    & (slopes["student"] == student)
                    & (slopes["metric"] == metric)
                ].iloc[0]
                color = COLORS.get(student)
                interval = f"[{s['lo']:.2f}, {s['hi']:.2f}]"
                label = f"{LABELS.get(student, student)}: slope {s['slope']:.2f} {interval}"
                marker = estimator_marker(student)
                ax.plot(b["n"], b["center"], "-", marker=marker, color=color, label=label, ms=3)
                ax.fill_between(b["n"], b["lo"], b["hi"], color=color, alpha=0.25)
            if fit.n_min is not None:
                ax.axvline(fit.n_min, color="0.6", ls=":", lw=1)
            ax.set_xscale("log")
            ax.set_yscale("log")
            # The sizes themselves on x: the minor labels of a short log axis (2x10^1, 3x10^1,
            # ...) overlap.
            ax.set_xticks(sizes, [f"{t:g}" for t in sizes])
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.tick_params(labelsize=8)
            ax.set_xlabel("n (sequences)")
            ax.set_ylabel(f"{metric.replace('_', ' ')} (median)")
            ax.set_title(f"{variation}: {metric.replace('_', ' ')}", fontsize=9)
            ax.legend(fontsize=7)
            ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    return fig
