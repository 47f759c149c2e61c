"""Datasets, sources and errors on a real S3 endpoint (moto's server on 127.0.0.1).

Given an S3 endpoint named by AWS_ENDPOINT_URL and credentials in AWS_* variables, when a
dataset is written to and read from `s3://bucket/prefix`, and `.ts` sources are imported from a
versioned bucket, then the data round-trips, the manifest records each source object's key,
size, ETag and version id, and a missing bucket or a wrong secret fails before any work with a
message naming the bucket and the operation.
"""

from __future__ import annotations

import boto3
import numpy as np
import pytest
from conftest import make_toy_dataset, point_at_s3, start_moto, stop

from pipeline import storage
from pipeline.cli import main
from pipeline.data.dataset import SPLITS, read_manifest, read_split, write_dataset

BUILTIN = "pipeline/data/builtin/JapaneseVowels"


def _s3():
    return storage.s3_client()


def test_a_dataset_round_trips_through_s3(s3_endpoint, tmp_path):
    _s3().create_bucket(Bucket="recur-data")
    local = make_toy_dataset(tmp_path / "toy")
    tables = {s: read_split(str(local), s) for s in SPLITS}
    written = write_dataset("s3://recur-data/toy", tables, name="toy", task="classify",
                                     labels=["neg", "pos"], sources=[], import_params={})

    manifest = read_manifest("s3://recur-data/toy")
    assert manifest == written and manifest.data_hash == read_manifest(str(local)).data_hash
    for split in SPLITS:
        back = read_split("s3://recur-data/toy", split)
        assert back.column("id").to_pylist() == tables[split].column("id").to_pylist()
        assert np.allclose(back.column("x").to_pylist()[0], tables[split].column("x").to_pylist()[0])
    keys = sorted(o["Key"] for o in _s3().list_objects_v2(Bucket="recur-data")["Contents"])
    assert keys == ["toy/manifest.json", "toy/test/part-00000.parquet", "toy/train/part-00000.parquet",
                    "toy/val/part-00000.parquet"]


def test_import_from_a_versioned_bucket_records_etags_and_versions(s3_endpoint, capsys):
    s3 = _s3()
    s3.create_bucket(Bucket="recur-sources")
    s3.put_bucket_versioning(Bucket="recur-sources", VersioningConfiguration={"Status": "Enabled"})
    s3.create_bucket(Bucket="recur-data")
    uploaded = {}
    for name in ("JapaneseVowels_TRAIN.ts", "JapaneseVowels_TEST.ts"):
        s3.upload_file(f"{BUILTIN}/{name}", "recur-sources", f"jv/{name}")
        head = s3.head_object(Bucket="recur-sources", Key=f"jv/{name}")
        uploaded[f"s3://recur-sources/jv/{name}"] = (head["ETag"].strip('"'), head["VersionId"],
                                                      head["ContentLength"])

    assert main(["data", "import", "--format", "ts", "s3://recur-sources/jv/",
                 "--out", "s3://recur-data/jv"]) == 0
    manifest = read_manifest("s3://recur-data/jv")
    assert manifest.splits["train"].rows + manifest.splits["val"].rows == 270
    assert manifest.splits["test"].rows == 370
    recorded = {s.path: (s.etag, s.version_id, s.size) for s in manifest.sources}
    assert recorded == uploaded


def test_a_missing_bucket_fails_before_any_work(s3_endpoint, capsys):
    code = main(["data", "import", "--format", "ts", f"{BUILTIN}/JapaneseVowels_TRAIN.ts",
                 "--out", "s3://no-such-bucket/jv"])
    err = capsys.readouterr().err
    assert code == 2
    assert "bucket 'no-such-bucket'" in err and "write the dataset (--out)" in err
    assert "does not exist" in err


def test_a_wrong_secret_fails_naming_the_bucket_and_operation(tmp_path, monkeypatch, capsys):
    # moto checks signatures once its first requests (the IAM set-up below) are spent
    url, process = start_moto(tmp_path / "moto.log", {"INITIAL_NO_AUTH_ACTION_COUNT": "4"})
    try:
        admin = dict(endpoint_url=url, region_name="us-east-1", aws_access_key_id="setup",
                     aws_secret_access_key="setup")
        iam = boto3.client("iam", **admin)
        iam.create_user(UserName="recur")
        key = iam.create_access_key(UserName="recur")["AccessKey"]
        iam.put_user_policy(UserName="recur", PolicyName="s3", PolicyDocument=(
            '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}'))
        boto3.client("s3", **admin).create_bucket(Bucket="recur-data")
        good = {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
                "AWS_DEFAULT_REGION": "us-east-1"}
        point_at_s3(monkeypatch, url, good)
        storage.check_bucket("s3://recur-data/x", "read")  # the right key works

        point_at_s3(monkeypatch, url, {**good, "AWS_SECRET_ACCESS_KEY": "not-the-secret"})
        code = main(["data", "import", "--format", "ts", f"{BUILTIN}/JapaneseVowels_TRAIN.ts",
                     "--out", "s3://recur-data/jv"])
        err = capsys.readouterr().err
        assert code == 2
        assert "bucket 'recur-data'" in err and "write the dataset (--out)" in err and "access denied" in err
        assert "not-the-secret" not in err
        with pytest.raises(storage.StorageError,
                           match="S3 list on bucket 'recur-data'.*secret key does not match"):
            storage.list_objects("s3://recur-data/jv/")
    finally:
        stop(process)
