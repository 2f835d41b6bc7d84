"""Test-session set-up shared by every test, doctest and notebook run by ``python -m pytest``.

Float64 everywhere in the test processes (the library itself never changes global config; the
notebooks turn it on themselves).

One persistent JAX compilation cache for the whole run: the pytest workers (``-n auto``), the
notebook kernels started by ``--nbmake`` and the subprocesses of the CLI and Ray tests inherit
``JAX_COMPILATION_CACHE_DIR`` and reuse each other's compiled units instead of compiling the same
(estimator, n, config) again. A cached executable is the one a compilation would produce, so
results do not change. The cache lives in ``.pytest_cache/jax`` (ignored by git); JAX keys its
entries by the jax/jaxlib versions and the program, so a stale entry is never used.
"""

import os
from pathlib import Path

os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(Path(__file__).resolve().parent / ".pytest_cache" / "jax"))

import jax  # noqa: E402  (after the environment, which subprocesses inherit)

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
