"""Redaction: secret-looking names and values never reach MLflow params, tags, artifacts or logs."""

import io
import json
import logging
from pathlib import Path

import mlflow
import pytest
import yaml
from mlflow import MlflowClient

from pipeline import config as config_mod
from pipeline.tracking import run as run_mod
from pipeline.tracking import store
from pipeline.tracking.redact import (
    MASK,
    RedactingFilter,
    install_log_redaction,
    is_secret_name,
    redact_mapping,
    redact_params,
    redact_text,
)

REPO = Path(__file__).resolve().parents[2]
PLANTED = "pl4nted-s3cret-9d2f"  # what a test sets as a secret; it must appear nowhere


@pytest.mark.parametrize("name", [
    "password", "PASSWORD", "db_passwd", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN",
    "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID", "RAY_AUTH_TOKEN", "GITHUB_TOKEN",
    "token", "api_key", "apiKey", "APIKEY", "tracking.auth_token", "client_secret", "private_key",
    "credentials", "google.credential", "session_token", "access_token", "X-Amz-Signature", "auth",
])
def test_secret_names(name):
    assert is_secret_name(name)


@pytest.mark.parametrize("name", [
    "tokenizer", "max_tokens", "num_tokens", "max_new_tokens", "pad_token", "data.source.token_column",
    "tokens", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH", "author", "PWD", "key", "recur.step.train.key",
    "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_URI", "monitor", "sampled.train.lr", "",
])
def test_names_that_are_not_secrets(name):
    assert not is_secret_name(name)


def _schema_keys(schema: dict) -> set[str]:
    """Every property name anywhere in the config's JSON schema."""
    found: set[str] = set()

    def walk(node):
        if isinstance(node, dict):
            found.update(node.get("properties", {}))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return found


def test_none_of_recurs_own_config_keys_is_redacted():
    # given every key the config schema knows and every flattened param of the shipped configs
    keys = _schema_keys(config_mod.RecurConfig.model_json_schema())
    for path in sorted((REPO / "configs").glob("*.yaml")):
        keys |= set(config_mod.flatten(config_mod.load_config([path])))
    assert "token_column" in keys and "data.source.token_column" in keys
    # then none of them looks like a secret
    assert [k for k in sorted(keys) if is_secret_name(k)] == []


def test_nested_mappings_are_redacted_by_key_and_by_value(monkeypatch):
    monkeypatch.setenv("MY_SERVICE_TOKEN", PLANTED)
    data = {
        "tracking": {"password": "hunter22", "tracking_uri": "https://ann:pw123@mlflow.example.com"},
        "credentials": {"user": "ann", "key": "k"},  # a secret sub-tree goes as a whole
        "runs": [{"api_key": 12345}, {"note": f"copied {PLANTED} here"}],
        "token_column": 0, "empty_password": None, "tuple": ("a", "b"),
    }
    assert redact_mapping(data) == {
        "tracking": {"password": MASK, "tracking_uri": f"https://ann:{MASK}@mlflow.example.com"},
        "credentials": MASK,
        "runs": [{"api_key": MASK}, {"note": f"copied {MASK} here"}],
        "token_column": 0, "empty_password": None, "tuple": ("a", "b"),
    }
    assert data["tracking"]["password"] == "hunter22"  # the input is not changed


def test_text_loses_secret_env_values_url_passwords_and_secret_assignments(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", PLANTED)
    monkeypatch.setenv("SOME_API_KEY", "abc")  # shorter than 4 characters: not masked everywhere
    monkeypatch.setenv("AUTH_ENABLED", "true")  # a setting, and too common a word
    monkeypatch.setenv("HOME_DIR_NAME", "visible-value")  # not a secret name
    text = (f"key {PLANTED} in a path /tmp/{PLANTED}/x; server https://ann:pw%40x@mlflow:5000/api, "
            "s3 https://b.s3.amazonaws.com/o?X-Amz-Credential=AKIA1&X-Amz-Signature=deadbeef&v=1, "
            "header Authorization: Bearer eyJhbGciOi.J9.sig, --set tracking.password=pw1 token_column=0, "
            "abc true visible-value")
    assert redact_text(text) == (
        f"key {MASK} in a path /tmp/{MASK}/x; server https://ann:{MASK}@mlflow:5000/api, "
        f"s3 https://b.s3.amazonaws.com/o?X-Amz-Credential={MASK}&X-Amz-Signature={MASK}&v=1, "
        f"header Authorization: Bearer {MASK}, --set tracking.password={MASK} token_column=0, "
        "abc true visible-value")


def test_text_without_secrets_is_unchanged():
    text = ("epoch 3/20 train_loss 0.41 https://mlflow.example.com/#/runs/1 user@example.com "
            "Bearer authentication, http://127.0.0.1:5000/x@y")
    assert redact_text(text) == text


def test_params_are_redacted_by_name_and_value(monkeypatch):
    # given a config whose values carry a planted secret and a URL password
    monkeypatch.setenv("RAY_AUTH_TOKEN", PLANTED)
    cfg = config_mod.RecurConfig(tracking={"tracking_uri": "https://ann:pw123@mlflow.example.com",
                                           "run_name": f"run-{PLANTED}"})
    # when it is flattened into params the way every run and trial does
    params = redact_params({**config_mod.flatten(cfg), "sampled.db_password": "x1y2"})
    # then neither shows, and the other params are as they were
    assert params["tracking.tracking_uri"] == f"https://ann:{MASK}@mlflow.example.com"
    assert params["tracking.run_name"] == f"run-{MASK}"
    assert params["sampled.db_password"] == MASK
    assert params["train.lr"] == cfg.train.lr and params["data.source"] is None
    assert PLANTED not in json.dumps(params)


def _logger_to(stream: io.StringIO, name: str) -> logging.Logger:
    logger = logging.getLogger(name)
    logger.propagate = False
    logger.handlers = [logging.StreamHandler(stream)]
    logger.setLevel(logging.INFO)
    return logger


def test_log_records_are_redacted_with_their_arguments_and_tracebacks(monkeypatch):
    # given a handler with the filter and a planted secret
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PLANTED)
    stream = io.StringIO()
    logger = _logger_to(stream, "recur.test.redact")
    logger.handlers[0].addFilter(RedactingFilter())
    # when the secret is logged as an argument, in a URL and inside an exception
    logger.info("connecting to %s with %s", "https://ann:pw123@mlflow", PLANTED)
    try:
        raise RuntimeError(f"refused {PLANTED}")
    except RuntimeError:
        logger.exception("failed")
    # then the output names neither
    out = stream.getvalue()
    assert PLANTED not in out and "pw123" not in out
    assert f"connecting to https://ann:{MASK}@mlflow with {MASK}" in out
    assert f"RuntimeError: refused {MASK}" in out


def test_install_adds_one_filter_per_handler(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", PLANTED)
    stream = io.StringIO()
    logger = _logger_to(stream, "recur.test.install")
    install_log_redaction([logger])
    install_log_redaction()  # again, for every logger with handlers: idempotent
    assert sum(isinstance(f, RedactingFilter) for f in logger.handlers[0].filters) == 1
    logger.warning("token is %s", PLANTED)
    assert stream.getvalue() == f"token is {MASK}\n"


class _FakeClient:
    """Records what open_trial_run writes."""

    def __init__(self, *args, **kwargs):
        self.params, self.tags = [], {}

    def search_runs(self, *args, **kwargs):
        return []

    def create_run(self, experiment_id, run_name, tags):
        self.tags.update(tags)
        return type("Run", (), {"info": type("Info", (), {"run_id": "r1"})()})()

    def log_batch(self, run_id, params=()):
        self.params += list(params)


def test_trial_runs_log_redacted_params(monkeypatch):
    monkeypatch.setenv("AWS_SESSION_TOKEN", PLANTED)
    client = _FakeClient()
    monkeypatch.setattr(run_mod, "MlflowClient", lambda *a, **k: client)
    cfg = config_mod.RecurConfig(tracking={"tracking_uri": f"https://ann:{PLANTED}@mlflow"})
    run_mod.open_trial_run("http://unused", "0", parent_run_id="p", study="s", trial_id="t1", cfg=cfg,
                           sampled={"train.lr": 0.01, "note": PLANTED})
    written = json.dumps({p.key: p.value for p in client.params})
    assert client.params and PLANTED not in written and PLANTED not in json.dumps(client.tags)


def test_a_run_on_a_real_store_shows_no_planted_secret(tmp_path, monkeypatch):
    # given a planted secret in the environment, copied into config values
    monkeypatch.setenv("RECUR_TEST_PASSWORD", PLANTED)
    cfg = config_mod.RecurConfig(tracking={"runs_dir": str(tmp_path / "runs"), "run_name": f"r-{PLANTED}",
                                           "experiment": "redact"},
                                 registry={"model_name": f"m-{PLANTED}"})
    uri = store.default_tracking_uri(cfg.tracking.runs_dir)
    store.check_reachable(uri)
    # when a run is opened and logs params, tags, texts and dicts through the tracker
    with store.use_tracking_uri(uri):
        tracker = run_mod.RunTracker(cfg, uri, store.ensure_experiment(cfg, uri))
        run_id = tracker.start(config_sources=[f"/configs/{PLANTED}.yaml"], tags={"note": PLANTED})
        tracker.log_params({"extra": f"x{PLANTED}"})
        tracker.set_tags({"recur.api_key": "k3y-value"})
        tracker.log_text(f"line with {PLANTED}\n", "eval/notes.txt")
        tracker.log_dict({"secret": "s", "nested": [PLANTED]}, "eval/info.json")
        tracker.finish()
    # then no param, tag or artifact holds it
    run = MlflowClient(uri).get_run(run_id)
    assert PLANTED not in json.dumps([run.data.params, run.data.tags, run.info.run_name])
    assert run.data.tags["recur.api_key"] == MASK and run.data.params["registry.model_name"] == f"m-{MASK}"
    artifacts = Path(mlflow.artifacts.download_artifacts(run_id=run_id, dst_path=str(tmp_path / "dl"),
                                                         tracking_uri=uri))
    files = [p for p in artifacts.rglob("*") if p.is_file()]
    assert {"config/resolved.yaml", "eval/notes.txt", "eval/info.json"} <= {
        p.relative_to(artifacts).as_posix() for p in files}
    assert all(PLANTED not in p.read_text() for p in files)
    resolved = yaml.safe_load((artifacts / "config/resolved.yaml").read_text())
    assert resolved["tracking"]["run_name"] == f"r-{MASK}" and resolved["data"]["source"] is None


@pytest.mark.parametrize("name", ["PGPASSWORD", "DB_PASS", "SMTP_PWD", "GITHUB_PAT", "mysql_pw",
                                  "DBPASSWORD"])
def test_database_and_personal_access_token_names_are_secrets(name):
    assert is_secret_name(name)


@pytest.mark.parametrize("name", ["PWD", "OLDPWD", "pat", "bypass", "passthrough", "compass", "pass"])
def test_the_same_words_alone_or_inside_others_are_not(name):
    assert not is_secret_name(name)


def test_a_planted_pgpassword_and_url_passwords_with_slash_or_hash_are_masked(monkeypatch):
    # given the variable docs/deployment.md tells PostgreSQL users to export, and passwords with / and #
    monkeypatch.setenv("PGPASSWORD", PLANTED)
    text = (f"connect failed for {PLANTED}: postgresql://mlflow:ab/cd#e@db.internal:5432/mlflow and "
            "http://ann:p#ss/w?rd@127.0.0.1:5001/api then http://127.0.0.1:5000/x@y")
    assert redact_text(text) == (
        f"connect failed for {MASK}: postgresql://mlflow:{MASK}@db.internal:5432/mlflow and "
        f"http://ann:{MASK}@127.0.0.1:5001/api then http://127.0.0.1:5000/x@y")
