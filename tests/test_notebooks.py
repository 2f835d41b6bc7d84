"""How the notebooks are stored: parameters first, logic in the library, a conclusion last, no
outputs but the final figures.

``pytest --nbmake`` (on in the default run, ``setup.cfg``) executes them; this file checks their
form.
"""

from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_the_notebooks_are_there():
    names = [p.stem for p in NOTEBOOKS]
    assert names == [
        "01_lora_as_mixture",
        "02_exact_vs_overspecified",
        "03_activations",
        "04_gating",
        "05_regimes",
        "06_lower_bounds",
        "07_attention_head",
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_form(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", []), (
        "the first code cell holds the parameters"
    )
    assert all(
        line.split("#")[0].strip() == "" or "=" in line for line in code[0].source.splitlines()
    ), "the parameter cell only assigns values"
    for c in code:
        assert not any(
            line.lstrip().startswith(("def ", "class ")) for line in c.source.splitlines()
        ), f"logic belongs in the library, not in a notebook cell:\n{c.source}"
    last = nb.cells[-1]
    assert last.cell_type == "markdown" and last.source.startswith("## Conclusion"), (
        "a written conclusion ends the notebook"
    )
    assert "CONCLUSION" not in last.source and len(last.source) > 200
    finals = [c for c in code if "final-figure" in c.metadata.get("tags", [])]
    assert finals, "the final figure is tagged final-figure"
    for c in code:
        assert c.execution_count is None
        if c in finals:
            assert len(c.outputs) == 1 and set(c.outputs[0].data) == {"image/png"}, (
                "final figures are stored as images only"
            )
        else:
            assert c.outputs == [], (
                "notebooks are stored without outputs (python notebooks/strip_outputs.py)"
            )
