"""infra/k8s manifests: parsed with yaml, the fields the retraining CronJob relies on, and every
credential a Secret reference, never a value in the file."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml
from croniter import croniter

REPO = Path(__file__).resolve().parents[2]
CRONJOB = REPO / "infra" / "k8s" / "retrain-cronjob.yaml"
CREDENTIAL_ENV = re.compile(r"^(MLFLOW_|AWS_)|PASSWORD|SECRET|TOKEN|ACCESS_KEY|CREDENTIAL", re.I)


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _by_kind(docs: list[dict]) -> dict[str, dict]:
    kinds = [d["kind"] for d in docs]
    assert len(kinds) == len(set(kinds)), f"one document per kind expected: {kinds}"
    return {d["kind"]: d for d in docs}


def _rayjob(docs: list[dict]) -> dict:
    return yaml.safe_load(_by_kind(docs)["ConfigMap"]["data"]["rayjob.yaml"])


def _env_lists(node):
    """Every container `env` list in a manifest tree."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "env" and isinstance(value, list):
                yield value
            else:
                yield from _env_lists(value)
    elif isinstance(node, list):
        for item in node:
            yield from _env_lists(item)


def _containers(pod_spec: dict) -> list[dict]:
    return pod_spec.get("initContainers", []) + pod_spec["containers"]


@pytest.fixture(scope="module")
def docs() -> list[dict]:
    return _docs(CRONJOB)


def test_cronjob_forbids_overlap_and_waits_for_its_rayjob(docs):
    kinds = _by_kind(docs)
    cron = kinds["CronJob"]
    assert cron["apiVersion"] == "batch/v1"
    spec = cron["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    assert croniter.is_valid(spec["schedule"])
    assert spec["startingDeadlineSeconds"] > 0  # one run for missed times, within the deadline
    job = spec["jobTemplate"]["spec"]
    assert job["backoffLimit"] == 0  # a retry would create a second RayJob
    pod = job["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["serviceAccountName"] == kinds["ServiceAccount"]["metadata"]["name"]
    [container] = _containers(pod)
    script = "\n".join(container["args"])
    mount = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    [volume] = pod["volumes"]
    assert volume["configMap"]["name"] == kinds["ConfigMap"]["metadata"]["name"]
    assert f"kubectl create -f {mount[volume['name']]}/rayjob.yaml" in script
    # Forbid only counts the CronJob's own Jobs: the pod must live as long as the RayJob runs
    assert "jobDeploymentStatus" in script and "SUCCEEDED" in script
    # the RayJob stops before the pod's deadline, so a timed-out pod leaves no training behind
    assert _rayjob(docs)["spec"]["activeDeadlineSeconds"] < job["activeDeadlineSeconds"]


def test_rbac_lets_the_pod_create_and_watch_rayjobs(docs):
    kinds = _by_kind(docs)
    [rule] = kinds["Role"]["rules"]
    assert rule["apiGroups"] == ["ray.io"] and rule["resources"] == ["rayjobs"]
    assert {"create", "get"} <= set(rule["verbs"])
    binding = kinds["RoleBinding"]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": kinds["Role"]["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount",
                                    "name": kinds["ServiceAccount"]["metadata"]["name"]}]


def test_rayjob_runs_the_retrain_entry_point(docs):
    rayjob = _rayjob(docs)
    assert rayjob["apiVersion"] == "ray.io/v1" and rayjob["kind"] == "RayJob"
    assert rayjob["metadata"]["generateName"]  # a new RayJob per run
    spec = rayjob["spec"]
    args = shlex.split(spec["entrypoint"])
    assert args[:2] == ["python", "jobs/retrain.py"] and (REPO / args[1]).is_file()
    configs = [args[i + 1] for i, a in enumerate(args) if a == "--config"]
    assert configs and all(c.startswith("configs/") and (REPO / c).is_file() for c in configs)
    assert spec["shutdownAfterJobFinishes"] is True
    cluster = spec["rayClusterSpec"]
    pods = [cluster["headGroupSpec"]["template"]["spec"],
            *[g["template"]["spec"] for g in cluster["workerGroupSpecs"]]]
    for pod in pods:
        for container in _containers(pod):
            env = {e["name"]: e for e in container["env"]}
            for name in ("MLFLOW_TRACKING_URI", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
                assert "secretKeyRef" in env[name]["valueFrom"], (container["name"], name)


def test_every_credential_is_a_secret_reference(docs):
    trees = [*docs, _rayjob(docs)]
    seen = 0
    for tree in trees:
        for env in _env_lists(tree):
            for var in env:
                if CREDENTIAL_ENV.search(var["name"]):
                    seen += 1
                    assert "value" not in var, f"{var['name']} has an inline value"
                    ref = var["valueFrom"]["secretKeyRef"]
                    assert ref["name"] and ref["key"], var
    assert seen >= 6
    assert not [d for d in docs if d["kind"] == "Secret"], "Secrets are created apart, never shipped here"


def test_no_plaintext_credentials_in_the_file():
    text = CRONJOB.read_text()
    assert not re.search(r"AKIA[0-9A-Z]{16}", text)  # an AWS access key id
    assert not re.search(r"\b[A-Za-z0-9/+=]{40}\b", text)  # an AWS secret key's shape
    assert not re.search(r"://[^/\s:@]+:[^/\s@]+@", text)  # user:password@ in a URL
    # --from-literal=key=VALUE in the instructions only ever takes the value from the shell
    for literal in re.findall(r"--from-literal=[\w-]+=(\S+)", text):
        assert literal.startswith('"$'), literal
    inline = re.compile(r"(password|secret|token)\s*:\s*['\"]?\w", re.I)  # password: hunter2
    assert not [line for line in text.splitlines() if inline.search(line) and "secretKeyRef" not in line]
