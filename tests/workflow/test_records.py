"""Step records are keyed by where results live and checked against the store before a skip.

Fast: a real MLflow store (sqlite) and recur's own records; nothing is trained here. The whole
scenario with two `mlflow server`s is in tests/workflow/test_steps.py
(`test_another_mlflow_server_gets_its_own_run_and_champion`).
"""

from __future__ import annotations

from mlflow import MlflowClient

from pipeline.tracking.store import default_tracking_uri
from pipeline.workflow.records import STORE_STEPS, new_record, store_hash
from pipeline.workflow.step_book import holds_run, holds_version


def test_another_tracking_or_registry_uri_or_storage_path_is_another_key():
    base = dict(tracking_uri="sqlite:////r/mlflow.db", registry_uri="sqlite:////r/mlflow.db",
                storage_path="/r/ray")
    hashes = {store_hash(**base), store_hash(**{**base, "tracking_uri": "http://127.0.0.1:5000"}),
              store_hash(**{**base, "registry_uri": "http://127.0.0.1:5001"}),
              store_hash(**{**base, "storage_path": "s3://bucket/ray"})}
    assert len(hashes) == 4
    keys = {new_record("train", {}, {"data": "d", "store": h}, "d").key for h in hashes}
    assert len(keys) == 4
    assert set(STORE_STEPS) == {"tune", "train", "evaluate", "register", "promote"}


def test_a_record_counts_only_while_the_store_holds_its_run_and_version(tmp_path):
    uri = default_tracking_uri(str(tmp_path / "runs"))
    (tmp_path / "runs").mkdir()
    client = MlflowClient(uri)
    run = client.create_run(client.create_experiment("e"))
    other = client.create_run(run.info.experiment_id)
    # a run id the store never had (another server's), then one it has, then that one deleted
    assert not holds_run(uri, "0123456789abcdef0123456789abcdef")
    assert holds_run(uri, run.info.run_id)
    client.delete_run(run.info.run_id)
    assert not holds_run(uri, run.info.run_id)
    # a version registered from the recorded run; not one from another run; gated only when tagged
    assert not holds_version(uri, "held", "1", other.info.run_id)
    client.create_registered_model("held")
    client.create_model_version("held", source=(tmp_path / "m").as_uri(), run_id=other.info.run_id)
    assert holds_version(uri, "held", "1", other.info.run_id)
    assert not holds_version(uri, "held", "1", run.info.run_id)  # this store's version 1 is another model
    assert not holds_version(uri, "held", "1", other.info.run_id, decided=True)
    client.set_model_version_tag("held", "1", "recur.decision", "champion")
    assert holds_version(uri, "held", "1", other.info.run_id, decided=True)
