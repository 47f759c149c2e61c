"""The package's layers as pyproject.toml's [tool.importlinter] writes them down: every import,
inside functions too, points down the layer order, and no two modules of one package import each
other round a cycle. `lint-imports` names the import that breaks either rule."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_imports_point_down_the_layers_and_round_no_cycle():
    done = subprocess.run([str(Path(sys.executable).with_name("lint-imports")), "--no-cache"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "2 kept, 0 broken" in done.stdout
