"""The README as the front door and the docs site behind it: the site builds with `mkdocs build
--strict` (no broken link or anchor, every page in the nav), the README stays short and its
relative links lead somewhere, and the configuration reference is the one generated from the
config schema now."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from pipeline import config
from pipeline.docs_reference import COMMAND, render

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
REFERENCE = REPO / "docs" / "configuration-reference.md"


def test_the_docs_site_builds_strictly(tmp_path):
    site = tmp_path / "site"
    # NO_MKDOCS_2_WARNING: Material's banner about MkDocs 2.0, noise in a failure message
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(REPO / "mkdocs.yml"),
         "--site-dir", str(site)],
        cwd=REPO, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"}, capture_output=True, text=True,
        timeout=300,
    )
    assert done.returncode == 0, (f"mkdocs build --strict failed:\n{done.stdout[-3000:]}\n"
                                  f"{done.stderr[-5000:]}")
    assert (site / "index.html").is_file()
    assert (site / "configuration-reference" / "index.html").is_file()


def test_the_readme_is_at_most_300_lines_and_its_relative_links_exist():
    text = README.read_text()
    assert len(text.splitlines()) <= 300, "README.md is the front door: move sections to docs/"
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    relative = [t for t in targets if not re.match(r"[a-z][a-z0-9+.-]*:|#", t)]
    assert any(t.startswith("docs/") and t.endswith(".md") for t in relative)
    missing = [t for t in relative if not (REPO / t.split("#", 1)[0]).exists()]
    assert not missing, f"README.md links to files that do not exist: {missing}"


def test_the_configuration_reference_is_the_generated_one():
    assert REFERENCE.read_text() == render(), (
        f"{REFERENCE.relative_to(REPO)} differs from the config schema in pipeline/config/: "
        f"run `.venv/bin/python -m {COMMAND.removeprefix('python -m ')}` and commit the page")


def _keys(prefix: str, model) -> list[str]:
    out = []
    for name, field in model.model_fields.items():
        out.append(f"{prefix}{name}")
        nested = field.annotation
        for candidate in getattr(nested, "__args__", (nested,)):
            if candidate is config.SourceConfig:  # one model per format: each one's keys
                for source in config.SOURCE_MODELS.values():
                    out += [k for k in _keys(f"{prefix}{name}.", source) if k not in out]
            elif isinstance(candidate, type) and issubclass(candidate, config.Section):
                out += _keys(f"{prefix}{name}.", candidate)
    return out


def test_the_reference_has_a_row_per_key_with_its_default_and_description():
    page = render()
    keys = _keys("", config.RecurConfig)
    nested = {"data.source.format", "train.schedule.name", "tune.scheduler.max_t", "resources.num_workers"}
    assert nested <= set(keys)
    missing = [k for k in keys if "." in k and f"| `{k}` |" not in page]
    missing += [f"## {k}" for k in keys if "." not in k and f"\n## {k}\n" not in page]
    assert not missing, missing
    # the row of a key is its type, bounds, default and description as pydantic has them
    assert ("| `train.lr` | float, > 0.0, <= 10.0 | `0.003` | learning rate (finite, at most 10) |"
            in page)
    # a description holding | or an HTML-like <unk> stays in its cell and visible
    assert "{choice\\|grid\\|uniform" in page and "become &lt;unk>" in page
