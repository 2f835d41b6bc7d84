"""Store notebooks the way this repository keeps them: no outputs but the final figures.

    python notebooks/strip_outputs.py notebooks/*.ipynb             # strip only
    python notebooks/strip_outputs.py --execute notebooks/*.ipynb   # run each, then strip

Every output is removed except the images of cells tagged ``final-figure``; execution counts and
run metadata go too, so a diff shows only what a person changed. ``--execute`` runs each notebook
top to bottom in a fresh kernel first (in its own folder, as ``pytest --nbmake`` does) and prints
its wall time; a failing cell stops with the error and leaves the file unchanged.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import nbformat

FINAL = "final-figure"


def strip(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Remove every output but the images of ``final-figure`` cells, and all execution counts."""
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type != "code":
            continue
        cell.execution_count = None
        keep = []
        if FINAL in cell.metadata.get("tags", []):
            for out in cell.outputs:
                if out.get("output_type") in (
                    "display_data",
                    "execute_result",
                ) and "image/png" in out.get("data", {}):
                    keep.append(
                        nbformat.v4.new_output(
                            "display_data", data={"image/png": out["data"]["image/png"]}
                        )
                    )
        cell.outputs = keep
    return nb


def execute(nb: nbformat.NotebookNode, folder: Path, timeout: int) -> float:
    """Run ``nb`` in a fresh kernel with ``folder`` as working directory; returns wall seconds."""
    from nbclient import NotebookClient

    t0 = time.perf_counter()
    NotebookClient(
        nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(folder)}}
    ).execute()
    return time.perf_counter() - t0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument(
        "--execute", action="store_true", help="run each notebook before stripping it"
    )
    parser.add_argument(
        "--timeout", type=int, default=900, help="seconds per cell when executing (default 900)"
    )
    args = parser.parse_args(argv)
    for path in args.notebooks:
        if path.suffix != ".ipynb" or not path.is_file():
            print(f"{path}: not a notebook file", file=sys.stderr)
            return 2
        nb = nbformat.read(path, as_version=4)
        if args.execute:
            seconds = execute(nb, path.parent.resolve(), args.timeout)
            print(f"{path}: ran in {seconds:.1f} s")
        nbformat.write(strip(nb), path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
