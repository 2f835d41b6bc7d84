"""One figure style: a colour and a marker per estimator and per head student, the same in every
figure, and how every figure is saved.

Colours are Okabe and Ito's colour-blind-safe set ("Color Universal Design", 2008), and every
curve of an estimator also has its own marker, so that no figure is read by colour alone. Known
names have fixed colours; any other name (an exploration's ``"vanilla R=50"``) gets a spare
colour chosen by the CRC-32 of its text, so it is stable across runs and processes.

``save_figure`` is the one place a figure is written (``moe-lora plot`` and the scripts that
draw the committed figures): TrueType (Type 42) fonts in PDF, which publishers' checkers accept
where they flag Type 3, and no creation date or other varying metadata, so that re-plotting an
unchanged table gives byte-identical PDF and PNG files.

>>> estimator_color("tanh"), estimator_color("vanilla R=50") == estimator_color("vanilla R=50")
('#009E73', True)
>>> estimator_marker("vanilla")
'o'
"""

from __future__ import annotations

import zlib
from pathlib import Path

#: Okabe-Ito colours by name.
OKABE_ITO = {
    "blue": "#0072B2",
    "orange": "#E69F00",
    "green": "#009E73",
    "vermillion": "#D55E00",
    "purple": "#CC79A7",
    "sky": "#56B4E9",
    "yellow": "#F0E442",
    "black": "#000000",
}
#: Estimator -> colour, in the canonical order of estimators in legends.
ESTIMATOR_COLORS = {
    "vanilla": OKABE_ITO["blue"],
    "linear": OKABE_ITO["orange"],
    "tanh": OKABE_ITO["green"],
    "sigmoid": OKABE_ITO["vermillion"],
    "gelu": OKABE_ITO["purple"],
    "relu": OKABE_ITO["sky"],
}
#: Attention-head student -> colour (``moe_lora.head``).
STUDENT_COLORS = {
    "lora": OKABE_ITO["blue"],
    "learned_generator": OKABE_ITO["vermillion"],
    "fixed_maps": OKABE_ITO["green"],
}
#: Colours of names not listed above.
SPARE = (OKABE_ITO["black"], "#7F7F7F", OKABE_ITO["yellow"], "#882255", "#44AA99", "#332288")
#: Estimator or student -> marker.
MARKERS = {
    "vanilla": "o",
    "linear": "s",
    "tanh": "^",
    "sigmoid": "D",
    "gelu": "v",
    "relu": "P",
    "lora": "o",
    "learned_generator": "s",
    "fixed_maps": "^",
}
SPARE_MARKERS = ("X", "*", "h", "<", ">", "p")

#: Matplotlib settings of every saved figure.
RC = {
    "pdf.fonttype": 42,  # TrueType, not Type 3
    "ps.fonttype": 42,
    "svg.hashsalt": "moe_lora",  # stable ids in SVG
    "path.simplify": True,
}
#: PDF metadata of every figure: no creation date, a fixed producer.
PDF_METADATA = {"CreationDate": None, "ModDate": None, "Producer": "moe_lora", "Creator": None}
#: PNG metadata: no software version.
PNG_METADATA = {"Software": None}


def estimator_color(name: str) -> str:
    """The colour of estimator (or student) ``name``, the same in every figure.

    Args:
        name: estimator name, e.g. ``"vanilla"``, ``"linear"``, ``"tanh"``, or a head student.

    Returns:
        A matplotlib colour.
    """
    return (
        ESTIMATOR_COLORS.get(name)
        or STUDENT_COLORS.get(name)
        or SPARE[zlib.crc32(name.encode()) % len(SPARE)]
    )


def estimator_marker(name: str) -> str:
    """The marker of estimator (or student) ``name``, the same in every figure."""
    return MARKERS.get(name) or SPARE_MARKERS[zlib.crc32(name.encode()) % len(SPARE_MARKERS)]


def estimator_order(names) -> list[str]:
    """``names``: the known estimators in the canonical order, then the others alphabetically."""
    known = list(ESTIMATOR_COLORS)
    return sorted(names, key=lambda e: (known.index(e) if e in known else len(known), e))


def save_figure(fig, out_dir, stem: str, *, dpi: int = 150) -> list:
    """Write ``fig`` to ``<out_dir>/<stem>.pdf`` and ``.png`` in the style of every figure (``RC``,
    fixed metadata), then clear it; returns the paths.

    Re-saving an unchanged figure gives the same bytes (tests/test_polish.py checks it).
    """
    import matplotlib

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{stem}.pdf", out / f"{stem}.png"]
    with matplotlib.rc_context(RC):
        for p in paths:
            metadata = PDF_METADATA if p.suffix == ".pdf" else PNG_METADATA
            fig.savefig(p, dpi=dpi, metadata=metadata)
    fig.clear()
    return paths


def mark_partial(fig, missing: int, total: int):
    """Mark ``fig`` as drawn from a partial run: a red "PARTIAL" line at its top. Returns it."""
    fig.text(
        0.01,
        0.995,
        f"PARTIAL: {missing} of {total} units missing",
        color=OKABE_ITO["vermillion"],
        fontsize=10,
        fontweight="bold",
        ha="left",
        va="top",
    )
    return fig
