"""The scheduler's state file (round trip, atomic replace, lock) and what it watches (the data
version of a dataset folder or of source files). Real files, no Ray."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest
from conftest import make_toy_dataset

from pipeline.config import RecurConfig
from pipeline.data.dataset import read_manifest
from pipeline.scheduling.decide import JobRecord, State, Triggers, decide, record
from pipeline.scheduling.scheduler import schedule_key, submission_id
from pipeline.scheduling.state import StateError, StateLock, load_state, save_state
from pipeline.scheduling.watch import (
    DatasetWatcher,
    DataVersion,
    LocalStore,
    S3Store,
    SourcesWatcher,
    watcher_for,
)
from pipeline.storage import StorageError

UTC = timezone.utc
FULL = State(cron="0 3 * * *", timezone="Europe/Berlin", next_fire=datetime(2025, 1, 2, 2, tzinfo=UTC),
             last_fire=datetime(2025, 1, 1, 2, tzinfo=UTC), last_data_version="c" * 64,
             last_job=JobRecord(job_id="recur-x-1", status="RUNNING", trigger="cron+new-data",
                                submitted_at=datetime(2025, 1, 1, 2, 0, 3, tzinfo=UTC),
                                data_version="c" * 64, fire_time=datetime(2025, 1, 1, 2, tzinfo=UTC)),
             last_tick=datetime(2025, 1, 1, 2, 0, 4, tzinfo=UTC), last_decision="fired ...")


def test_missing_state_file_is_an_empty_state(tmp_path):
    assert load_state(tmp_path / "none.json") == State()


def test_state_round_trips(tmp_path):
    path = tmp_path / "deep" / "state.json"
    save_state(path, FULL)  # creates the folder
    assert load_state(path) == FULL
    data = json.loads(path.read_text())
    assert data["format_version"] == 1 and data["next_fire"] == "2025-01-02T02:00:00+00:00"
    assert data["last_job"]["job_id"] == "recur-x-1"
    save_state(path, State())
    assert load_state(path) == State()


def test_save_replaces_atomically_and_leaves_no_temporary_files(tmp_path):
    path = tmp_path / "state.json"
    save_state(path, FULL)
    inode = path.stat().st_ino
    save_state(path, State(last_data_version="d" * 64))
    assert path.stat().st_ino != inode  # a new file renamed over the old one, not rewritten in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_a_failed_write_keeps_the_old_state(tmp_path):
    path = tmp_path / "state.json"
    save_state(path, FULL)

    bad = State(last_decision=object())  # json.dump fails half-way through
    with pytest.raises(TypeError):
        save_state(path, bad)
    assert load_state(path) == FULL
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_unreadable_state_names_the_file(tmp_path):
    path = tmp_path / "state.json"
    path.write_text("{not json")
    with pytest.raises(StateError, match="state.json is unreadable"):
        load_state(path)
    path.write_text(json.dumps({"format_version": 1, "surprise": 1}))
    with pytest.raises(StateError, match="surprise"):
        load_state(path)
    path.write_text(json.dumps({"format_version": 99}))
    with pytest.raises(StateError, match="format_version 99"):
        load_state(path)


def test_decide_record_save_load_is_a_restart(tmp_path):
    """What a restarted scheduler reads is what the last tick decided."""
    triggers = Triggers(cron="0 3 * * *", on_new_data=True)
    now = datetime(2025, 1, 1, 12, tzinfo=UTC)
    d = decide(State(), triggers, now=now, data_version="e" * 64)
    save_state(tmp_path / "s.json", record(State(), d, triggers, now=now, job_id="j1"))
    again = load_state(tmp_path / "s.json")
    assert again.last_data_version == "e" * 64 and again.next_fire == datetime(2025, 1, 2, 3, tzinfo=UTC)
    later = datetime(2025, 1, 1, 13, tzinfo=UTC)
    assert decide(again, triggers, now=later, data_version="e" * 64, job_status="RUNNING").action == "wait"


def test_one_scheduler_per_state_file(tmp_path):
    path = tmp_path / "state.json"
    with StateLock(path):
        assert (tmp_path / "state.json.lock").read_text() == str(os.getpid())
        # another process cannot take it (flock is per open file, so try from a child process)
        code = ("import sys; sys.path.insert(0, sys.argv[2]);"
                "from pipeline.scheduling.state import StateLock, StateError\n"
                "try:\n    StateLock(sys.argv[1]).__enter__()\nexcept StateError as e:\n"
                "    print(e); sys.exit(3)\n")
        out = subprocess.run([sys.executable, "-c", code, str(path), str(Path.cwd())],
                             capture_output=True, text=True)
        assert out.returncode == 3, out.stderr
        assert f"another scheduler (pid {os.getpid()}) is using" in out.stdout
    with StateLock(path):  # released
        pass


# ------------------------------------------------------------------------------ watching


def test_dataset_version_is_the_manifest_data_hash(tmp_path):
    root = tmp_path / "toy"
    watcher = DatasetWatcher(LocalStore(str(root)))
    assert watcher.current() is None  # nothing imported yet
    make_toy_dataset(root, seed=1)
    v1 = watcher.current()
    assert v1.key == read_manifest(str(root)).data_hash and v1.kind == "dataset"
    assert v1.short == v1.key[:12]
    make_toy_dataset(root, seed=1)  # the same data again: the same version
    assert watcher.current() == v1
    (root / "manifest.json").unlink()  # an import half-way: the manifest comes last
    assert watcher.current() is None
    make_toy_dataset(root, seed=2)
    assert watcher.current().key not in (None, v1.key)


def test_source_version_follows_content_not_timestamps(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.csv").write_text("t,v\n1,2\n")
    (src / ".a.csv.tmp").write_text("half-written")  # hidden temporary files are not data
    single = tmp_path / "b.csv"
    single.write_text("t,v\n3,4\n")
    watcher = SourcesWatcher([LocalStore(str(src)), LocalStore(str(single))])
    v1 = watcher.current()
    assert v1.kind == "sources" and len(v1.key) == 64
    os.utime(src / "a.csv", (1, 1))  # touched, same bytes
    assert watcher.current() == v1
    (src / "a.csv").write_text("t,v\n1,3\n")
    v2 = watcher.current()
    assert v2.key != v1.key
    (src / "sub").mkdir()
    (src / "sub" / "c.csv").write_text("t,v\n")
    assert watcher.current().key not in (v1.key, v2.key)
    single.unlink()
    assert watcher.current() is None  # a source being replaced: no version now


def test_watcher_for_a_config(tmp_path):
    root = make_toy_dataset(tmp_path / "toy")
    cfg = RecurConfig.model_validate({"data": {"root": str(root)}})
    assert isinstance(watcher_for(cfg), DatasetWatcher)
    src = tmp_path / "x_TRAIN.ts"
    src.write_text("@problemName x\n")
    cfg = RecurConfig.model_validate({"data": {"root": str(root), "source": {"format": "ts",
                                                                             "paths": [str(src)]}}})
    watcher = watcher_for(cfg)
    assert isinstance(watcher, SourcesWatcher) and watcher.location == str(src)
    with pytest.raises(ValueError, match="a local path, file:// or s3:// location was expected"):
        LocalStore("gs://bucket/prefix")
    cfg = RecurConfig.model_validate({"data": {"root": "s3://bucket/data/toy", "source": {
        "format": "ts", "paths": ["s3://bucket/raw/x_TRAIN.ts", str(src)]}}})
    watcher = watcher_for(cfg)  # an S3 source is listed where it is: nothing is downloaded here
    assert [type(s) for s in watcher.stores] == [S3Store, LocalStore]
    assert watcher.location == f"s3://bucket/raw/x_TRAIN.ts, {src}"
    cfg = RecurConfig.model_validate({"data": {"root": "s3://bucket/data/toy/"}})
    assert watcher_for(cfg).location == "s3://bucket/data/toy"


def test_s3_dataset_and_source_versions(s3_endpoint, tmp_path):
    """The same versions as for local folders, from a real S3 endpoint (moto's server on loopback)."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket="recur-watch")
    dataset = DatasetWatcher(S3Store("s3://recur-watch/data/toy"))
    assert dataset.current() is None  # nothing imported yet
    make_toy_dataset("s3://recur-watch/data/toy", seed=1)
    v1 = dataset.current()
    assert v1 == DataVersion(key=read_manifest("s3://recur-watch/data/toy").data_hash,
                             kind="dataset", location="s3://recur-watch/data/toy")
    s3.delete_object(Bucket="recur-watch", Key="data/toy/manifest.json")  # a re-import half-way
    assert dataset.current() is None
    make_toy_dataset("s3://recur-watch/data/toy", seed=2)
    assert dataset.current().key not in (None, v1.key)

    def put(key: str, body: str) -> None:
        s3.put_object(Bucket="recur-watch", Key=key, Body=body.encode())

    put("raw/a.csv", "t,v\n1,2\n")
    put("raw/.a.csv.part", "half-written")  # hidden names are not data
    put("raw-old/z.csv", "a sibling prefix, not under raw/")
    put("single.csv", "t,v\n3,4\n")
    put("single.csv.bak", "a sibling of the single object")
    folder, single = S3Store("s3://recur-watch/raw/"), S3Store("s3://recur-watch/single.csv")
    assert [(o.key, o.size) for o in folder.list()] == [("a.csv", 8)]
    assert [o.key for o in single.list()] == [""] and single.read_bytes("") == b"t,v\n3,4\n"
    sources = SourcesWatcher([folder, single])
    s1 = sources.current()
    put("raw/a.csv", "t,v\n1,2\n")  # uploaded again, same bytes: same ETag, same version
    assert sources.current() == s1
    put("raw/a.csv", "t,v\n1,3\n")
    s2 = sources.current()
    assert s2.key != s1.key
    put("raw/sub/c.csv", "t,v\n")
    assert sources.current().key not in (s1.key, s2.key)
    s3.delete_object(Bucket="recur-watch", Key="single.csv")
    assert sources.current() is None  # a source being replaced: no version now
    with pytest.raises(StorageError, match="recur-missing.*does not exist"):
        DatasetWatcher(S3Store("s3://recur-missing/data")).current()


# ------------------------------------------------------------------------------ job naming


def test_schedule_keys_and_submission_ids(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    key = schedule_key(["configs/a.yaml"], [])
    assert len(key) == 8 and key == schedule_key([str(tmp_path / "configs/a.yaml")], [])
    assert key != schedule_key(["configs/a.yaml"], ["train.lr=0.01"])

    data = decide(State(), Triggers(on_new_data=True), now=datetime(2025, 1, 1, tzinfo=UTC),
                  data_version="f" * 64)
    assert submission_id("Japanese Vowels", key, data) == f"recur-japanese-vowels-{key}-data-ffffffffffff"
    state = State(cron="0 3 * * *", timezone="UTC", next_fire=datetime(2025, 1, 1, 3, tzinfo=UTC))
    cron = decide(state, Triggers(cron="0 3 * * *"), now=datetime(2025, 1, 1, 3, 0, 9, tzinfo=UTC))
    assert submission_id("m", key, cron) == f"recur-m-{key}-cron-20250101t030000z-nodata"
