"""The registered model carries recur's code under a name of its own, and checks its inputs.

Given the session's champion (registered by the real pipeline on a real `mlflow server`), when a
fresh Python process that has already imported a module named `pipeline` of its own loads the
model with `mlflow.pyfunc.load_model`, then the model predicts and the process keeps its own
`pipeline`. MLflow's scoring server (the app `mlflow models serve` runs, served by uvicorn on
loopback) takes all-integer JSON, and answers a wrong channel count with status 400 and recur's
row check in the message.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pipeline.tracking.pyfunc import BUNDLE_PREFIX, rename_package


def test_imports_of_the_package_are_renamed_and_nothing_else():
    source = textwrap.dedent('''\
        """Docs mention pipeline.training.budget and the word pipeline."""
        from pipeline.config import RecurConfig
        from pipeline import progress
        import pipeline

        def f():
            from pipeline.tasks import build_task
            return "pipeline.tasks.classify:ClassifyTask", "pipeline.data", run_pipeline.x
        ''')
    renamed = rename_package(source, "recur_model_abc")
    assert "from recur_model_abc.config import RecurConfig" in renamed
    assert "from recur_model_abc import progress" in renamed
    assert "import recur_model_abc as pipeline" in renamed
    assert "    from recur_model_abc.tasks import build_task" in renamed
    assert '"recur_model_abc.tasks.classify:ClassifyTask", "recur_model_abc.data"' in renamed
    # prose and other names are left alone
    assert "Docs mention pipeline.training.budget and the word pipeline." in renamed
    assert "run_pipeline.x" in renamed


def test_an_import_form_that_is_not_renamed_is_refused():
    with pytest.raises(RuntimeError, match="not renamed"):
        rename_package("import pipeline.tasks\n", "recur_model_abc")


LOAD_BESIDE_ANOTHER_PIPELINE = '''
import json, sys, threading, time, urllib.error, urllib.request
sys.path.insert(0, sys.argv[1])
import pipeline  # the application's own module of that name
own = pipeline
import mlflow
import uvicorn
from mlflow.pyfunc import scoring_server

mlflow.set_tracking_uri(sys.argv[2])
model = mlflow.pyfunc.load_model(sys.argv[3])
assert sys.modules["pipeline"] is own and own.OWN, "the model replaced the application's pipeline"

# the app `mlflow models serve` runs, served by uvicorn on loopback in this process, on the port
# the kernel gives its own bind (none chosen first that another process could take meanwhile)
server = uvicorn.Server(uvicorn.Config(scoring_server.init(model), host="127.0.0.1", port=0,
                                       log_level="warning"))
thread = threading.Thread(target=server.run, daemon=True)
thread.start()
deadline = time.time() + 60
while not server.started:
    assert time.time() < deadline, "the scoring server did not start"
    time.sleep(0.05)
port = server.servers[0].sockets[0].getsockname()[1]

def serve(rows):  # a JSON request body, as a client of `mlflow models serve` sends it
    body = json.dumps({"dataframe_split": {"columns": ["x"], "data": [[r] for r in rows]}}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())

ints = serve([[[1, 2, 3], [4, 5, 6]], [[0, 0, 1]]])
wrong = serve([[[1.5, 2.5], [3.0, 4.0]]])
print(json.dumps({"ints": ints, "wrong": wrong,
                  "bundled": sorted({m.split(".")[0] for m in sys.modules if m.startswith("recur_model_")}),
                  "pipeline": own.__file__}))
server.should_exit = True
thread.join(timeout=30)
'''


@pytest.mark.slow
def test_the_champion_loads_beside_another_pipeline_and_answers_like_recur(champion, tmp_path):
    app = tmp_path / "app"
    app.mkdir()
    (app / "pipeline.py").write_text("OWN = True  # an application's own module named pipeline\n")
    script = tmp_path / "load.py"
    script.write_text(LOAD_BESIDE_ANOTHER_PIPELINE)
    proc = subprocess.run([sys.executable, str(script), str(app), champion.tracking_uri,
                           f"models:/{champion.model}@champion"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    # the model's code is its own package, and the application's module is the one it imported
    assert seen["pipeline"] == str(app / "pipeline.py")
    assert len(seen["bundled"]) == 1 and seen["bundled"][0].startswith(BUNDLE_PREFIX)
    # all-integer JSON is numbers: predicted (before: "Can not safely convert int64 to float64")
    status, body = seen["ints"]
    assert status == 200, body
    assert [p["label"] for p in body["predictions"]] != [] and len(body["predictions"]) == 2
    # a wrong channel count: 400 with recur's own row check (before: a generic 400)
    status, body = seen["wrong"]
    assert status == 400 and body["error_code"] == "INVALID_PARAMETER_VALUE"
    assert "row 0: wrong channel count: step 0 has 2 values, expected 3" in body["message"], body
    assert "Add type hints" not in proc.stderr  # predict's input is annotated


def test_the_model_digest_changes_with_any_byte_name_or_file(tmp_path):
    from pipeline.tracking.integrity import model_digest

    model = tmp_path / "model"
    (model / "code" / "pkg").mkdir(parents=True)
    (model / "MLmodel").write_text("flavors: {}\n")
    (model / "code" / "pkg" / "m.py").write_bytes(b"x = 1\n")
    first = model_digest(str(model))
    assert len(first) == 64 and model_digest(str(model)) == first
    (model / "code" / "pkg" / "m.py").write_bytes(b"x = 2\n")
    assert model_digest(str(model)) != first
    (model / "code" / "pkg" / "m.py").write_bytes(b"x = 1\n")
    assert model_digest(str(model)) == first
    (model / "code" / "pkg" / "m.py").rename(model / "code" / "pkg" / "n.py")
    assert model_digest(str(model)) != first
    (model / "code" / "pkg" / "n.py").rename(model / "code" / "pkg" / "m.py")
    (model / "code" / "pkg" / "extra.py").write_text("import os\n")
    assert model_digest(str(model)) != first


@pytest.mark.slow
def test_a_version_whose_files_changed_after_registration_is_not_loaded(champion, tmp_path):
    """Given the champion's files copied with one byte of its bundled code changed and logged to a
    new run, registered with the digest the champion's files have (what recur recorded before
    someone wrote to the artifact store), when recur loads that version for predict or the gate,
    then it refuses (exit-2 error naming the version) before MLflow imports the code."""
    import mlflow
    from mlflow import MlflowClient

    from pipeline.errors import exit_code
    from pipeline.inference.model import load_registered
    from pipeline.tracking.integrity import CONTENT_TAG, ModelTampered, model_digest
    from pipeline.tracking.model_ref import ModelSpec
    from pipeline.tracking.registry import score_model
    from pipeline.tracking.store import use_tracking_uri

    client = MlflowClient(champion.tracking_uri, registry_uri=champion.tracking_uri)
    registered = client.get_model_version_by_alias(champion.model, "champion")
    with use_tracking_uri(champion.tracking_uri):  # models:/ downloads ask MLflow's current registry
        source = mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{champion.model}/{registered.version}", dst_path=str(tmp_path / "dl"))
    # the champion was registered with the digest of exactly these files
    assert registered.tags[CONTENT_TAG] == model_digest(source)
    code = next(Path(source).rglob("pyfunc.py"))
    code.write_text(code.read_text() + "\nPLANTED = True\n")
    experiment = client.get_run(registered.run_id).info.experiment_id
    run = client.create_run(experiment)
    client.log_artifacts(run.info.run_id, source, "model")
    client.set_terminated(run.info.run_id)
    name = "tampered-copy"
    client.create_registered_model(name)
    version = client.create_model_version(name, f"runs:/{run.info.run_id}/model", run.info.run_id,
                                          tags={CONTENT_TAG: registered.tags[CONTENT_TAG]}).version

    with pytest.raises(ModelTampered, match=rf"{name} version {version}: its files .* are not the ones "
                       "registered") as caught:
        load_registered(ModelSpec.parse(f"{name}/{version}"), champion.tracking_uri)
    assert exit_code(caught.value) == 2
    with pytest.raises(ModelTampered):
        score_model(name, str(version), None, lambda outputs: {"accuracy": 1.0}, "accuracy",
                    tracking_uri=champion.tracking_uri)
    # the planted code was never imported (a loaded model imports its bundled pyfunc module)
    assert not [name for name, m in list(sys.modules.items())
                if name.startswith(BUNDLE_PREFIX) and "PLANTED" in getattr(m, "__dict__", {})]
