"""Test-wide JAX settings: float64 everywhere (the library itself never changes global config)."""

import jax

jax.config.update("jax_enable_x64", True)
