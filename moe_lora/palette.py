"""One colour per estimator and per head student, the same in every figure.

Every figure module reads its colours here (``moe_lora.figures``; the lower-bound and head
figures may too), so a colour is defined once. Known names have fixed colours; any other name
(an exploration's ``"vanilla R=50"``) gets a spare colour chosen by the CRC-32 of its text, so
it is stable across runs and processes.

>>> estimator_color("tanh"), estimator_color("vanilla R=50") == estimator_color("vanilla R=50")
('tab:green', True)
"""

from __future__ import annotations

import zlib

#: Estimator -> colour, in the canonical order of estimators in legends.
ESTIMATOR_COLORS = {
    "vanilla": "tab:blue",
    "linear": "tab:orange",
    "tanh": "tab:green",
    "sigmoid": "tab:red",
    "gelu": "tab:purple",
    "relu": "tab:brown",
}
#: Attention-head student -> colour (``moe_lora.head``).
STUDENT_COLORS = {"lora": "tab:blue", "learned_generator": "tab:red", "fixed_maps": "tab:green"}
#: Colours of names not listed above.
SPARE = ("tab:pink", "tab:olive", "tab:cyan", "tab:gray", "gold", "navy")


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


def estimator_order(names) -> list[str]:
    """``names``: the known estimators in the canonical order, then the others alphabetically."""
    known = list(ESTIMATOR_COLORS)
    return sorted(names, key=lambda e: (known.index(e) if e in known else len(known), e))
