"""Validators of static settings: each names the field it checks and raises ``FieldError``.

``FieldError`` (``moe_lora.model``) is a ``ValueError`` that carries the field's name, so a
caller that built the object from its own keys names its key without parsing the message: the
config turns it into a ``ConfigError`` naming ``<section>.<key>``
(``moe_lora.config.Section.build``). Every check returns the value it accepted.

>>> positive("sigma", 0.1)
0.1
>>> positive("sigma", -1.0)
Traceback (most recent call last):
...
moe_lora.model.FieldError: sigma must be positive and finite, got -1.0
"""

from __future__ import annotations

import math
from collections.abc import Collection

import numpy as np

from .model import FieldError


def real(name: str, value):
    """A real number: int or float (numpy's included), not a bool."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise FieldError(name, f"{name} must be a number, got {value!r}")
    return value


def positive(name: str, value, *, finite: bool = True):
    """``value > 0`` (and finite, unless ``finite=False``)."""
    if not (value > 0) or (finite and not math.isfinite(value)):
        raise FieldError(
            name, f"{name} must be positive{' and finite' if finite else ''}, got {value!r}"
        )
    return value


def non_negative(name: str, value):
    """``value >= 0`` and finite."""
    if not (math.isfinite(value) and value >= 0):
        raise FieldError(name, f"{name} must be finite and non-negative, got {value!r}")
    return value


def integer(name: str, value, *, minimum: int | None = None):
    """An integer (not a bool), ``>= minimum`` if given."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise FieldError(name, f"{name} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise FieldError(name, f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def one_of(name: str, value, choices: Collection):
    """``value`` is one of ``choices``."""
    if value not in choices:
        raise FieldError(name, f"Unknown {name} {value!r}; expected one of {list(choices)}")
    return value
