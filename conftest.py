"""Test-session set-up shared by every test, doctest and notebook run by ``python -m pytest``.

Float64 and strict rank promotion (``jax_numpy_rank_promotion="raise"``: no silent broadcasting
of arrays of different ranks) in the test processes. The library itself never changes global
config; the notebooks turn float64 on themselves.

With ``MOE_LORA_TEST_JAX_CACHE=1`` (off by default: see below), one persistent JAX compilation
cache for the whole run: the pytest workers (``-n auto``), the
notebook kernels started by ``--nbmake`` and the subprocesses of the CLI and Ray tests inherit
``JAX_COMPILATION_CACHE_DIR`` and reuse each other's compiled units instead of compiling the same
(estimator, n, config) again. A cached executable is the one a compilation would produce, so
results do not change. The cache lives in ``.pytest_cache/jax`` (ignored by git); JAX keys its
entries by the jax/jaxlib versions and the program, so a stale entry is never used.

Test tiers: the notebooks (``--nbmake``) are marked ``slow`` here, like the long tests marked in
their files, so ``python -m pytest -m "not slow"`` is the fast tier of the edit-test loop.
"""

import gc
import os
from pathlib import Path

import pytest

os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", str(Path(__file__).resolve().parent / ".pytest_cache" / "jax")
)

# The persistent cache is off unless MOE_LORA_TEST_JAX_CACHE=1. On a fresh clone (CI) with jax
# 0.10, writing some executables of the truth-free fits to it crashed the test process inside
# jax's compilation_cache.put_executable_and_time, twice in one run (an abort and a segfault);
# the same tests pass with the cache off. Subprocesses and notebook kernels inherit the setting.
CACHE = os.environ.get("MOE_LORA_TEST_JAX_CACHE", "0") == "1"
os.environ.setdefault("JAX_ENABLE_COMPILATION_CACHE", "true" if CACHE else "false")

# Cache every compiled unit, not only those that took over a second to compile (JAX's default):
# the tests compile hundreds of small programs, most of them in well under a second each.
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

import jax  # noqa: E402  (after the environment, which subprocesses inherit)

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_enable_compilation_cache", CACHE)
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update(
    "jax_persistent_cache_min_compile_time_secs",
    float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]),
)


def pytest_collection_modifyitems(items):
    for item in items:
        if item.nodeid.endswith(".ipynb") or type(item).__name__ == "NotebookItem":
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop JAX's compiled programs after each test file (doctest modules included).

    Every XLA:CPU compilation maps new memory for its code, and a pytest worker that compiles
    the whole suite's programs reached Linux's ``vm.max_map_count`` (65530 by default): past it
    ``mmap`` fails inside LLVM and the worker dies in ``backend_compile_and_load`` (SIGABRT or
    SIGSEGV), in whichever test compiles next. ``jax.clear_caches()`` releases the executables
    that no test still holds, so a worker's mappings stay bounded by one file's programs.
    ``MOE_LORA_TEST_MAPS=FILE`` appends each file's count of mappings to FILE (a diagnostic);
    ``MOE_LORA_TEST_KEEP_CACHES=1`` keeps the programs (to measure the growth without release).
    """
    yield
    if os.environ.get("MOE_LORA_TEST_KEEP_CACHES") != "1":
        jax.clear_caches()
        gc.collect()
    log = os.environ.get("MOE_LORA_TEST_MAPS")
    if log:
        from moe_lora.runs.local import _mappings  # (held, limit), None without /proc

        with open(log, "a") as f:
            f.write(f"{os.getpid()} {(_mappings() or (-1, -1))[0]}\n")
