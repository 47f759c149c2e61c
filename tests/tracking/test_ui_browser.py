"""The MLflow UI in a real browser: what a user of `recur ui` sees after `recur run`.

Given a tiny run tracked in the local store, when the real `recur ui` serves that store and
headless Chromium (Debian's `chromium` and `chromium-driver`, driven by Selenium) goes through it,
then the experiment lists the run, the run page shows its metrics with their values, the
learning-curve PNG opens from the run's artifacts, and the registered model page shows version 1
with the alias `champion`. Screenshots are kept under the test's tmp folder and copied to
$RECUR_TEST_ARTIFACTS when it is set. Without Chromium the test is skipped, with the reason.

The page-driving functions are those of scripts/screenshots.py (the pictures of README.md and
docs/what-you-see.md).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import struct
from pathlib import Path

import pytest
from mlflow import MlflowClient

from pipeline.cli import main
from pipeline.tracking.store import default_tracking_uri

REPO = Path(__file__).resolve().parents[2]
MODEL = "ui-toy"


def _load_browser_helpers():
    spec = importlib.util.spec_from_file_location("screenshots", REPO / "scripts" / "screenshots.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ui_pages = _load_browser_helpers()
BROWSER_MISSING = ui_pages.missing_browser()  # why Chromium cannot be driven here; pytest -ra prints it
pytestmark = [pytest.mark.slow, pytest.mark.skipif(bool(BROWSER_MISSING), reason=f"{BROWSER_MISSING}")]


def _png_width(path: str) -> int:
    header = Path(path).read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">I", header[16:20])[0]  # IHDR: width, then height


def _keep(screenshots: list[Path], capsys) -> None:
    """Copy the screenshots to $RECUR_TEST_ARTIFACTS (CI keeps that folder) and print where they are."""
    folder = os.environ.get("RECUR_TEST_ARTIFACTS")
    kept = list(screenshots)
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        kept += [Path(shutil.copy2(path, Path(folder) / path.name)) for path in screenshots]
    with capsys.disabled():  # shown even when the test passes
        print("\nMLflow UI screenshots:\n" + "\n".join(f"  {path}" for path in kept))


def test_mlflow_ui_shows_run_metrics_plots_and_champion(ray_local, toy_dataset, tmp_path, monkeypatch,
                                                         capsys):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the local store under runs_dir
    runs_dir = tmp_path / "runs"
    config = tmp_path / "ui.yaml"
    config.write_text(
        "resources: {num_workers: 0}\n"  # one rank in this process: what the UI shows is the subject
        "model: {cell: gru, hidden_size: 8}\n"
        "train: {epochs: 2, lr: 0.01, early_stopping_patience: 0}\n"
        "data: {batch_size: 16}\n"
        f"registry: {{model_name: {MODEL}, metric: accuracy, min_improvement: 0.0}}\n"
        "tracking: {experiment: ui}\n"
    )
    # given a tiny run tracked in the local sqlite store
    assert main(["run", str(config), "--set", f"data.root={toy_dataset}",
                 "--set", f"tracking.runs_dir={runs_dir}"]) == 0
    assert "became @champion" in capsys.readouterr().out
    client = MlflowClient(default_tracking_uri(str(runs_dir)))
    experiment = client.get_experiment_by_name("ui")
    (run,) = client.search_runs([experiment.experiment_id])
    curves = client.download_artifacts(run.info.run_id, "plots/learning_curves.png", str(tmp_path))

    # when `recur ui` serves that store and Chromium goes through it
    ui, process = ui_pages.start_ui(runs_dir, tmp_path / "ui.log")
    driver = ui_pages.open_browser()
    folder = tmp_path / "screenshots"
    screenshots: list[Path] = []
    try:
        ui_pages.prepare_ui(driver, ui)
        # then the experiment's runs table links the run, whose page lists its metrics and values
        metrics = {k: run.data.metrics[k] for k in ("test_accuracy", "train_loss", "val_loss")}
        ui_pages.show_run(driver, ui, experiment.experiment_id, run.info.run_name, metrics)
        screenshots.append(ui_pages.shoot(driver, folder, "run-page"))
        # the learning curves open from the run's artifacts, decoded whole by the browser
        width = ui_pages.show_artifact(driver, "plots/learning_curves.png")
        screenshots.append(ui_pages.shoot(driver, folder, "learning-curves"))
        assert width == _png_width(curves)
        # and the registered model lists version 1 with the alias champion
        ui_pages.show_model(driver, ui, MODEL, {"1": "champion"})
        screenshots.append(ui_pages.shoot(driver, folder, "registered-model"))
    except Exception:
        screenshots.append(ui_pages.shoot(driver, folder, "failure"))  # the page as the wait left it
        raise
    finally:
        driver.quit()
        ui_pages.stop_ui(process)
        _keep(screenshots, capsys)
