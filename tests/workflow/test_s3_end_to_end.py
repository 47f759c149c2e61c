"""The whole pipeline on S3: a real S3 endpoint on loopback (moto's server), started here.

Given `.ts` sources in a versioned bucket, an MLflow server whose artifacts are proxied to S3,
and a config whose dataset root and checkpoint storage are `s3://` URIs, when `recur run`
imports, trains with 2 workers, registers and promotes, and `recur predict` writes to `s3://`,
then the dataset, the checkpoints, the model's artifacts and the predictions are objects in the
buckets, `recur lineage MODEL@champion` prints each source's ETag and version id, and neither
the S3 secret nor a planted secret-looking variable appears in any output: the command's
output, the run's params, tags and artifacts, the files under runs_dir or the server's log.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow.dataset as pads
import pytest
from conftest import S3_TEST_ENV, start_mlflow_server, stop
from mlflow import MlflowClient

from pipeline import storage
from pipeline.cli import main

pytestmark = pytest.mark.slow

BUILTIN = Path("pipeline/data/builtin/JapaneseVowels")
PLANTED = "planted-token-9d2c41e7b5"  # RECUR_API_TOKEN: a secret-looking variable nobody may write
MODEL = "jv-on-s3"


def _keys(bucket: str) -> list[str]:
    pages = storage.s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def _config(tmp_path: Path, uri: str) -> Path:
    config = tmp_path / "s3.yaml"
    config.write_text(f"""
data:
  root: s3://recur-data/jv
  source: {{format: ts, paths: ["s3://recur-sources/jv/"]}}
  batch_size: 32
model: {{cell: gru, hidden_size: 16}}
train: {{epochs: 2, early_stopping_patience: 0}}
tracking:
  tracking_uri: {uri}
  experiment: on-s3
  runs_dir: {tmp_path / 'runs'}
  storage_path: s3://recur-checkpoints/ray
registry: {{model_name: {MODEL}}}
resources: {{num_workers: 2, cpus_per_worker: 0.5}}
""")
    return config


def test_pipeline_end_to_end_on_s3(ray_local, s3_endpoint, tmp_path, monkeypatch, capsys):
    s3 = storage.s3_client()
    for bucket in ("recur-sources", "recur-data", "recur-checkpoints", "recur-mlflow"):
        s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket="recur-sources", VersioningConfiguration={"Status": "Enabled"})
    heads = {}
    for name in ("JapaneseVowels_TRAIN.ts", "JapaneseVowels_TEST.ts"):
        s3.upload_file(str(BUILTIN / name), "recur-sources", f"jv/{name}")
        heads[name] = s3.head_object(Bucket="recur-sources", Key=f"jv/{name}")
    monkeypatch.setenv("RECUR_API_TOKEN", PLANTED)

    server_env = {**os.environ, "MLFLOW_S3_ENDPOINT_URL": s3_endpoint}
    (tmp_path / "mlflow").mkdir()
    uri, server = start_mlflow_server(tmp_path / "mlflow", "s3://recur-mlflow/artifacts", env=server_env)
    try:
        assert main(["run", str(_config(tmp_path, uri))]) == 0
        assert main(["predict", f"{MODEL}@champion", "--data", "s3://recur-data/jv", "--split", "test",
                     "--out", "s3://recur-data/predictions", "--tracking-uri", uri,
                     "--runs-dir", str(tmp_path / "runs")]) == 0
        assert main(["lineage", f"{MODEL}@champion", "--tracking-uri", uri]) == 0
        out = capsys.readouterr()

        # the dataset, the checkpoints and the model's artifacts are objects on S3
        assert "jv/manifest.json" in _keys("recur-data")
        checkpoints = [k for k in _keys("recur-checkpoints") if "/checkpoint_" in k]
        assert checkpoints, _keys("recur-checkpoints")
        assert any(k.endswith("MLmodel") for k in _keys("recur-mlflow"))

        client = MlflowClient(uri)
        version = client.get_model_version_by_alias(MODEL, "champion")
        assert version.version == "1"
        run = client.get_run(version.run_id)
        assert run.data.metrics["test_accuracy"] > 0.2  # 9 speakers: chance is 0.11 (2 short epochs)

        # every test row predicted, written to S3
        fs, path = storage.filesystem_for("s3://recur-data/predictions")
        table = pads.dataset(path, filesystem=fs, format="parquet").to_table()
        assert table.num_rows == 370 and table.column("error").null_count == 370

        # lineage: the run's dataset input and the version's tags carry every source's ETag
        profile = json.loads(run.inputs.dataset_inputs[0].dataset.profile)
        for name, head in heads.items():
            uri_ = f"s3://recur-sources/jv/{name}"
            etag, version_id = head["ETag"].strip('"'), head["VersionId"]
            assert {"path": uri_, "etag": etag, "version_id": version_id}.items() <= next(
                s for s in profile["sources"] if s["path"] == uri_).items()
            assert f"{uri_}  {head['ContentLength']} bytes" in out.out
            assert f"etag {etag}  version_id {version_id}" in out.out
        assert json.loads(version.tags["recur.sources"])[0]["etag"]

        # nothing secret written anywhere
        outputs = {"stdout": out.out, "stderr": out.err,
                   "params": json.dumps(run.data.params), "tags": json.dumps(run.data.tags),
                   "version tags": json.dumps(version.tags),
                   "server log": (tmp_path / "mlflow" / "server.log").read_text(errors="replace")}
        artifacts = Path(client.download_artifacts(run.info.run_id, "", str(tmp_path / "artifacts")))
        files = [p for p in [*artifacts.rglob("*"), *(tmp_path / "runs").rglob("*")] if p.is_file()]
        assert len(files) > 10
        for secret in (PLANTED, S3_TEST_ENV["AWS_SECRET_ACCESS_KEY"]):
            for what, text in outputs.items():
                assert secret not in text, f"{secret} in {what}"
            for f in files:
                assert secret.encode() not in f.read_bytes(), f"{secret} in {f}"
        with capsys.disabled():  # what `recur lineage` printed, shown in the test log (pytest -s)
            print("\n" + out.out[out.out.rindex(f"{MODEL} version "):].rstrip())
    finally:
        stop(server)
