"""The README and the docs site checked against what runs: the README's quick-start figures are
benchmark results saved in benchmarks/results/, not numbers typed once (`python -m benchmarks
quickstart` runs `recur run configs/quickstart.yaml` as a user does and saves what it printed and
its timings; when the quick start changes, run it again and paste), and the quick start and every
bash block marked `<!-- ci:runnable -->` (in README.md, then in the docs/ pages in the order of
mkdocs.yml's nav) run as written in a fresh folder."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
RESULTS = REPO / "benchmarks" / "results"


def test_the_quick_start_summary_is_a_saved_one():
    # the fenced block after "`recur run` ends with a summary like this one", and the file it names
    after = README.split("`recur run` ends with a summary like this one", 1)[1]
    name = re.search(r"`benchmarks/results/([\w.-]+\.json)`", after).group(1)
    saved = json.loads((RESULTS / name).read_text())
    shown = re.search(r"```\n(.*?)\n```", after, re.DOTALL).group(1).rstrip()
    assert shown == saved["summary"], "paste the saved summary into the README"


def test_the_quick_start_timings_are_the_saved_ones():
    saved = json.loads((RESULTS / "quickstart.json").read_text())
    said = re.search(r"`python -m benchmarks quickstart` \(.*?one run,\s+([\d.]+) s wall, (\d+) epochs\)",
                     README, re.DOTALL)
    assert said, "the README's quick-start timing sentence is missing"
    assert float(said.group(1)) == round(saved["median_wall_s"], 1)
    assert int(said.group(2)) == int(saved["runs"][0]["epochs"])


RUNNABLE = "<!-- ci:runnable -->"


def nav_pages(nav: list | None = None) -> list[str]:
    """The docs pages of mkdocs.yml's nav (paths under docs/), in nav order, sections flattened."""
    if nav is None:
        nav = yaml.safe_load((REPO / "mkdocs.yml").read_text())["nav"]
    pages: list[str] = []
    for item in nav:
        entries = item.values() if isinstance(item, dict) else [item]
        for entry in entries:
            pages += nav_pages(entry) if isinstance(entry, list) else [entry]
    return pages


def documentation() -> list[Path]:
    """What a reader goes through: README.md, then the docs site's pages in nav order."""
    return [REPO / "README.md", *(REPO / "docs" / page for page in nav_pages())]


def runnable_blocks(text: str = README) -> list[str]:
    """The bash blocks a page marks `<!-- ci:runnable -->`: they run as written, in this order, in
    a fresh clone after the quick start."""
    blocks = re.findall(re.escape(RUNNABLE) + r"\n```bash\n(.*?)\n```", text, re.DOTALL)
    assert len(blocks) == text.count(RUNNABLE), "a runnable marker must be right above a ```bash block"
    return blocks


def documented_runnable_blocks() -> list[str]:
    """Every runnable block of the README and the docs pages, in reading order."""
    return [block for page in documentation() for block in runnable_blocks(page.read_text())]


def test_runnable_markers_sit_on_bash_blocks():
    blocks = documented_runnable_blocks()
    # config show/schema, models list/promote, predict, runs sync with the quick start again
    assert len(blocks) >= 4
    # no marked block is left out: every Markdown file holding a marker is read (docs pages
    # outside the nav would be skipped, and `mkdocs build --strict` refuses such pages anyway)
    marked = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
    assert len(blocks) == sum(path.read_text().count(RUNNABLE) for path in marked)
    # the slow test below expects the last block to run the quick start again (nothing ran)
    assert "recur run configs/quickstart.yaml" in blocks[-1]
    assert runnable_blocks(f"{RUNNABLE}\n```bash\necho hi\n```\n") == ["echo hi"]
    nav = [{"A": "a.md"}, {"B": [{"C": "c.md"}, "d.md"]}, "e.md"]
    assert nav_pages(nav) == ["a.md", "c.md", "d.md", "e.md"]


@pytest.mark.slow
def test_the_quick_start_and_the_runnable_readme_blocks_run_as_written(tmp_path):
    """Given a fresh folder holding the shipped configs (as a clone has them) and a user's
    environment (no RAY_, MLFLOW_ or RECUR_ variables, this venv's `recur` on PATH), when the quick
    start's `recur run configs/quickstart.yaml` runs there, then it reaches the published accuracy
    and registers @champion; and every block the README and the docs pages (in nav order) mark
    runnable then exits 0 as written."""
    fresh = tmp_path / "clone"
    shutil.copytree(REPO / "configs", fresh / "configs")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_", "RECUR_"))}
    env.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}", RECUR_PROGRESS="plain")

    def sh(script: str) -> str:
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=fresh, env=env,
                              capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, (f"{script}\nexit {done.returncode}\n{done.stdout[-3000:]}\n"
                                      f"{done.stderr[-3000:]}")
        return done.stdout

    out = sh("recur run configs/quickstart.yaml")  # the quick start's command, after its install
    # the summary: accuracy at least 0.95 (published: TWIESN 0.965, FCN 0.993), macro-F1, the
    # run, the UI address and the registry decision
    accuracy = float(re.search(r"test accuracy\s+([\d.]+)", out).group(1))
    assert accuracy >= 0.95, out
    assert re.search(r"test macro f1\s+0\.9\d", out)
    assert "MLflow run" in out and "http://127.0.0.1:5000" in out
    assert "japanese-vowels version 1: became @champion" in out
    manifest = json.loads((fresh / "recur-runs/datasets/japanese-vowels/manifest.json").read_text())
    assert manifest["splits"]["test"]["rows"] == 370  # the shipped files, imported whole
    outputs = [sh(block) for block in documented_runnable_blocks()]
    assert any("japanese-vowels" in o and "champion" in o for o in outputs)  # models list
    assert (fresh / "predictions/jv").is_dir()  # recur predict wrote its output
    assert "nothing ran" in outputs[-1]  # the quick start again: every step skipped
