"""The pictures of what a user sees (README.md, docs/what-you-see.md): the `recur run` summary,
the MLflow run page, the learning curves and the registry with champion and challenger, taken in
headless Chromium.

    .venv/bin/python scripts/screenshots.py            # writes docs/images/*.png

It trains the quick start twice with few epochs in a temporary folder (a local Ray with 2 CPUs,
the local sqlite store), starts the real `recur ui` on a free port on 127.0.0.1, drives Debian's
`chromium` through `chromedriver` (apt-get install chromium chromium-driver) and stops the UI by
its process id. About 5 minutes on a busy 2-core machine. tests/tracking/test_ui_browser.py loads this
file and drives the same pages with the same functions, so the pictures and the test cannot drift.
"""

from __future__ import annotations

import argparse
import contextlib
import html
import io
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"  # Debian's package; the test tool never downloads a browser
CHROMEDRIVER = "/usr/bin/chromedriver"  # Debian's chromium-driver, the same version as chromium
WAIT_S = 90  # the MLflow UI is a React app: its first page load on a busy 2-core machine is slow


# ------------------------------------------------------------------------------ the browser


def missing_browser() -> str | None:
    """Why headless Chromium cannot be driven here, or None when it can."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "the selenium package is not installed (pip install -e '.[dev]')"
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            return (f"{path} not found: install Debian's {package} "
                    "(apt-get install --no-install-recommends chromium chromium-driver)")
    return None


def open_browser(width: int = 1600, height: int = 1000):
    """Headless Chromium (a Selenium WebDriver) with a window of `width` x `height` CSS pixels."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # --no-sandbox: as root in a container Chromium has no sandbox to start; /dev/shm is small there
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--hide-scrollbars",
                f"--window-size={width},{height}", "--force-device-scale-factor=1"):
        options.add_argument(arg)
    return webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))


def _wait(driver, timeout_s: float = WAIT_S):
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    # React re-renders replace elements under the wait's feet: look again rather than fail
    return WebDriverWait(driver, timeout_s, ignored_exceptions=(NoSuchElementException,
                                                                StaleElementReferenceException))


def page_text(driver) -> str:
    """The visible text of the page, with the UI's non-breaking spaces (`@ champion`) as spaces."""
    from selenium.webdriver.common.by import By

    return driver.find_element(By.TAG_NAME, "body").text.replace("\xa0", " ")


def wait_for(driver, xpath: str, what: str):
    """The first visible element matching `xpath`, once there; TimeoutException naming `what`."""
    from selenium.webdriver.common.by import By

    def visible(d):
        found = [e for e in d.find_elements(By.XPATH, xpath) if e.is_displayed()]
        return found[0] if found else False

    return _wait(driver).until(visible, f"the page never showed {what} ({xpath}) at {driver.current_url}")


def wait_for_text(driver, *texts: str) -> None:
    """Wait until the page shows every one of `texts`."""
    _wait(driver).until(lambda d: all(t in page_text(d) for t in texts),
                        f"the page never showed all of {texts} at {driver.current_url}")


def click(driver, xpath: str, what: str) -> None:
    wait_for(driver, xpath, what).click()


def by_text(text: str) -> str:
    """XPath of the elements with a text node of their own that reads `text` (without quotes)."""
    return f"//*[text()[normalize-space()='{text}']]"


def shoot(driver, folder: Path, name: str) -> Path:
    """Screenshot of the window as `folder/name.png`."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


# ------------------------------------------------------------------------ the MLflow pages


def prepare_ui(driver, ui: str) -> None:
    """Set the UI up as a user of recur would keep it: the MLflow Assistant side panel closed (it
    would cover a third of every picture) and the sidebar on "Model training", not "GenAI".

    These settings live in the origin's localStorage, set here on a plain page of the server.
    """
    driver.get(f"{ui}/health")
    driver.execute_script("localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false');"
                          "localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true');"
                          "localStorage.setItem('mlflow.workflowType_v1', '\"machine_learning\"');")


def show_run(driver, ui: str, experiment_id: str, run_name: str, metrics: dict[str, float]) -> None:
    """From the experiment's runs table, open the run named `run_name` and wait until its
    overview lists each of `metrics` with its value."""
    driver.get(f"{ui}/#/experiments/{experiment_id}/runs")
    click(driver, by_text(run_name), f"the run {run_name} in the runs table")
    wait_for(driver, f"//h2[normalize-space()='{run_name}']", f"the run page titled {run_name}")
    for key, value in metrics.items():
        row = wait_for(driver, f"//*[@role='row'][.{by_text(key)}]", f"the metric {key}")
        _wait(driver).until(lambda d, row=row, key=key, value=value: _shown(value) in row.text,
                            f"metric {key} without its value {_shown(value)}")


def _shown(value: float) -> str:
    """A metric value as the UI prints it (JavaScript's shortest round-trip form, like repr)."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def show_artifact(driver, artifact_path: str) -> int:
    """On an open run page, open the Artifacts tab and the PNG at `artifact_path` ("plots/x.png")
    in its tree; returns the width in pixels of the picture the browser decoded."""
    from selenium.webdriver.common.by import By

    click(driver, by_text("Artifacts"), "the Artifacts tab")
    shown_before = driver.execute_script("return [...document.images].map(i => i.src)")
    parts = artifact_path.split("/")
    for folder, inside in zip(parts, parts[1:]):
        if not any(e.is_displayed() for e in driver.find_elements(By.XPATH, by_text(inside))):
            click(driver, by_text(folder), f"the artifact folder {folder}")  # a click folds an open one
    click(driver, by_text(parts[-1]), f"the artifact {artifact_path}")
    wait_for_text(driver, artifact_path)  # the preview's header names the file
    # the preview is an <img> of the downloaded bytes under a new blob: URL (the previous preview's
    # may linger in the page); wait until it is shown and decoded
    width = _wait(driver).until(lambda d: d.execute_script(
        "const img = [...document.images].find(i => i.src.startsWith('blob:')"
        " && !arguments[0].includes(i.src) && i.complete && i.naturalWidth > 0"
        " && i.getClientRects().length > 0);"
        " return img ? img.naturalWidth : 0;", shown_before), f"the picture {artifact_path}")
    return int(width)


def show_model(driver, ui: str, model: str, aliases: dict[str, str]) -> None:
    """Open the registered model's page and wait until each version in `aliases` ({"1":
    "champion"}) is listed in a row of its own with `@ alias`."""
    driver.get(f"{ui}/#/models/{model}")
    wait_for_text(driver, model)
    for version, alias in aliases.items():
        link = f"//a[@href='#/models/{model}/versions/{version}']"
        row = wait_for(driver, f"{link}/ancestor::*[@role='row'][1]", f"version {version} of {model}")
        _wait(driver).until(lambda d, row=row, alias=alias: f"@ {alias}" in row.text.replace("\xa0", " "),
                            f"version {version} of {model} without the alias @{alias}")


def show_terminal(driver, text: str, folder: Path, name: str) -> Path:
    """`text` as a terminal would show it (a dark <pre>), screenshot cropped to it."""
    page = folder / f"{name}.html"
    folder.mkdir(parents=True, exist_ok=True)
    page.write_text(
        "<!doctype html><meta charset='utf-8'><body style='margin:0;background:#fff'>"
        "<pre id='terminal' style='display:inline-block;margin:0;padding:16px 20px;background:#1e1e1e;"
        "color:#e6e6e6;font:15px/1.45 \"DejaVu Sans Mono\",monospace'>"
        f"{html.escape(text)}</pre></body>")
    driver.get(page.as_uri())
    path = folder / f"{name}.png"
    wait_for(driver, "//pre[@id='terminal']", "the terminal text").screenshot(str(path))
    page.unlink()
    return path


# ------------------------------------------------------------------------------ `recur ui`


def start_ui(runs_dir: Path, log: Path, timeout_s: float = 180) -> tuple[str, subprocess.Popen]:
    """The real `recur ui --runs-dir runs_dir` on a free port of 127.0.0.1, in its own process
    group; returns its address once /health answers, and the process (stop it with `stop_ui`)."""
    from pipeline.ports import free_port

    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}  # the store under runs_dir
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "ui", "--port", str(port),
                                    "--runs-dir", str(runs_dir)], stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True, env=env, cwd=REPO)
    from pipeline.tracking.store import TrackingUnavailable, check_reachable

    ui = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while process.poll() is None and time.monotonic() < deadline:
        try:
            check_reachable(ui, timeout_s=2)  # /health answers once the UI can serve pages
            return ui, process
        except TrackingUnavailable:
            time.sleep(0.5)
    stop_ui(process)
    raise RuntimeError(f"`recur ui` did not come up at {ui}: {log.read_text()[-2000:]}")


def stop_ui(process: subprocess.Popen, timeout_s: float = 30) -> None:
    """Stop `recur ui` and the MLflow server under it (uvicorn workers, job consumers): SIGTERM to
    its process group, by its process id, then SIGKILL to whatever of the group outlives `timeout_s`."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while _group_alive(process.pid) and time.monotonic() < deadline:
        time.sleep(0.2)  # the server shuts its workers down after `recur ui` itself has exited
    if _group_alive(process.pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=timeout_s)


def _group_alive(pgid: int) -> bool:
    """Whether a process of group `pgid` still runs (zombies, which nothing may reap here, do not)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, _ppid, group = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, IndexError, ValueError):
            continue  # gone while we looked
        if state != "Z" and int(group) == pgid:
            return True
    return False


# ------------------------------------------------------------------------------ the script


def run_quickstart(work: Path, overrides: list[str]) -> str:
    """`recur run configs/quickstart.yaml --set ...` into `work`; returns what it printed (also echoed)."""
    from pipeline.cli import main

    argv = ["run", str(REPO / "configs" / "quickstart.yaml"), "--set", f"data.root={work / 'data'}",
            "--set", f"tracking.runs_dir={work / 'runs'}"]
    argv += [arg for override in overrides for arg in ("--set", override)]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(argv)
    print(printed.getvalue())
    if code != 0:
        raise SystemExit(f"recur {' '.join(argv)} failed with exit status {code}")
    return printed.getvalue()


def summary_of(printed: str) -> str:
    """The summary block `recur run` ends with."""
    return printed[printed.rindex("recur run finished"):].rstrip()


def take_screenshots(out: Path, epochs: int) -> list[Path]:
    import ray
    from mlflow import MlflowClient

    from pipeline.tracking.store import default_tracking_uri

    os.environ.pop("MLFLOW_TRACKING_URI", None)  # the local store under the work folder
    with tempfile.TemporaryDirectory(prefix="recur-screenshots-") as tmp:
        work = Path(tmp)
        ray.init(num_cpus=2, include_dashboard=False)
        # the quick start with few epochs, then a second model for the gate to judge
        commands = [[f"train.epochs={epochs}"], ["model.cell=lstm", f"train.epochs={max(1, epochs // 2)}"]]
        try:
            printed = [run_quickstart(work, overrides) for overrides in commands]
        finally:
            ray.shutdown()
        client = MlflowClient(default_tracking_uri(str(work / "runs")))
        experiment = client.get_experiment_by_name("quickstart")
        first = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])[0]
        versions = {mv.version: mv for mv in client.search_model_versions("name='japanese-vowels'")}
        aliases = {v: alias for v, mv in versions.items() for alias in mv.aliases}

        terminal = "\n\n".join(
            "$ recur run configs/quickstart.yaml" + "".join(f" --set {o}" for o in overrides)
            + f"\n...\n{summary_of(text)}" for overrides, text in zip(commands, printed))
        ui, process = start_ui(work / "runs", work / "ui.log")
        driver = open_browser()
        try:
            shots = [show_terminal(driver, terminal, out, "cli-summary")]
            prepare_ui(driver, ui)
            metrics = {k: first.data.metrics[k] for k in ("test_accuracy", "test_macro_f1")}
            show_run(driver, ui, experiment.experiment_id, first.info.run_name, metrics)
            shots.append(shoot(driver, out, "run-page"))
            show_artifact(driver, "plots/learning_curves.png")
            shots.append(shoot(driver, out, "learning-curves"))
            show_artifact(driver, "plots/confusion_matrix.png")
            shots.append(shoot(driver, out, "confusion-matrix"))
            show_model(driver, ui, "japanese-vowels", aliases)
            shots.append(shoot(driver, out, "registry"))
        finally:
            driver.quit()
            stop_ui(process)
    return shots


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images", help="folder for the PNGs")
    parser.add_argument("--epochs", type=int, default=8, help="epochs of the first run (the second: half)")
    args = parser.parse_args(argv)
    reason = missing_browser()
    if reason:
        print(f"screenshots: {reason}", file=sys.stderr)
        return 2
    for path in take_screenshots(args.out.resolve(), args.epochs):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
