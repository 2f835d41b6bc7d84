"""Wall time of ``moe-lora --help`` and ``import moe_lora``: the command must start fast (target
under 0.5 s), so ``moe_lora`` imports JAX, pandas and matplotlib only when a command needs them.

A benchmark that prints, never a timed test assertion (timings depend on the machine and its
load); tests/test_polish.py checks that ``--help`` imports nothing heavy.

    python benchmarks/cli_startup.py [--repeat 10]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time

TARGET_S = 0.5


def wall_times(command: list[str], repeat: int) -> list[float]:
    """Wall seconds of ``repeat`` runs of ``command`` (after one warm-up run)."""
    subprocess.run(command, check=True, capture_output=True)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return times


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=10)
    args = ap.parse_args(argv)
    entry = shutil.which("moe-lora")
    commands = {
        "moe-lora --help": [entry, "--help"] if entry else None,
        "python -m moe_lora --help": [sys.executable, "-m", "moe_lora", "--help"],
        "python -c 'import moe_lora'": [sys.executable, "-c", "import moe_lora"],
        "python -c pass (the interpreter alone)": [sys.executable, "-c", "pass"],
    }
    print(f"target: moe-lora --help under {TARGET_S} s; median and max of {args.repeat} runs")
    for label, command in commands.items():
        if command is None:
            print(f"{label:42s} not installed (pip install -e .)")
            continue
        t = wall_times(command, args.repeat)
        flag = "" if statistics.median(t) < TARGET_S else "  ABOVE TARGET"
        print(f"{label:42s} median {statistics.median(t):.3f} s, max {max(t):.3f} s{flag}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
