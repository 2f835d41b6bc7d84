#!/usr/bin/env bash
# The lowest supported versions: install every dependency of setup.cfg's install_requires at its
# floor (">=X" read as "==X") in a fresh virtual environment, then run the fast tier there.
#
#     scripts/lowest.sh [VENV]        # default VENV: .venv-lowest (removed first)
#
# The dev tools (pytest, ruff, ...) come at their newest allowed versions; only the package's own
# dependencies are pinned low. Not part of .ci/run: it downloads and installs a second environment.
# Last result (CHANGELOG.md, 0.2.0): 468 passed, 1 skipped, 2026-12-06.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:-.venv-lowest}
shift || true
rm -rf "$venv"
python3 -m venv "$venv"
. "$venv/bin/activate"
pins=$(python3 - <<'PY'
import configparser, re
cfg = configparser.ConfigParser()
cfg.read("setup.cfg")
for line in cfg["options"]["install_requires"].split("\n"):
    line = line.split("#")[0].strip()
    if not line:
        continue
    m = re.match(r"([A-Za-z0-9_.\-\[\]]+)\s*>=\s*([0-9][^,\s]*)", line)
    if not m:
        raise SystemExit(f"setup.cfg: no floor in {line!r}")
    print(f"{m.group(1)}=={m.group(2)}")
PY
)
echo "lowest versions:" $pins
pip install -q $pins
pip install -q -e '.[dev]' $pins
pip freeze | grep -iE '^(jax|jaxlib|optax|numpy|scipy|pandas|matplotlib|jaxtyping|pyarrow|tqdm)=='
python -m pytest -m "not slow" -q "$@"
