"""Every file under infra/: parsed, the fields each kind needs, Ray and MLflow versions that match the
pins, token authentication on, credentials only ever references; and a scan of the whole repository
for plaintext credentials, itself tested on planted ones so that it cannot pass by finding nothing."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

from pipeline.config import load_config

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
K8S = INFRA / "k8s"
COMPOSE = INFRA / "compose" / "docker-compose.yml"
AWS = INFRA / "aws" / "cluster.yaml"
MINIO_INIT = INFRA / "compose" / "minio-init.sh"
RAY_IMAGE = re.compile(r"rayproject/ray:(?P<tag>[\w.\-]+)")
# env var names whose values are credentials: never a literal in a manifest
SENSITIVE_ENV = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|ACCESS_KEY|CREDENTIAL|PGPASS", re.I)
URL_WITH_PASSWORD = re.compile(r"\b[a-z][a-z0-9+.\-]*://[^\s/:@'\"]+:(?P<password>[^\s/@'\"]+)@", re.I)


# ---- versions the infra files must agree with -------------------------------------------------

def _pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "constraints-cpu.txt").read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s#]+)", line.strip())
        if m:
            pins[m.group(1).lower()] = m.group(2)
    return pins


def _requirement(name: str) -> Requirement:
    """`name`'s requirement in pyproject's dependencies (the quoted strings of its list)."""
    text = (REPO / "pyproject.toml").read_text()
    deps = re.search(r"^dependencies = \[(.*?)^\]", text, re.S | re.M).group(1)
    reqs = [Requirement(d) for d in re.findall(r'^\s*"([^"]+)"', deps, re.M)]
    [req] = [r for r in reqs if r.name.lower() == name]
    return req


PINS = _pins()
RAY_VERSION = PINS["ray"]
MLFLOW_VERSION = PINS["mlflow"]


def test_the_pins_satisfy_pyproject():
    assert _requirement("ray").specifier.contains(RAY_VERSION)
    assert _requirement("mlflow").specifier.contains(MLFLOW_VERSION)


# ---- parsing every YAML file ------------------------------------------------------------------

def _yaml_files() -> list[Path]:
    return sorted(p for p in INFRA.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _k8s_docs() -> list[tuple[str, dict]]:
    """(where, document) for every Kubernetes object in infra/k8s, with objects embedded in
    ConfigMaps (the CronJob's RayJob template) as their own documents."""
    out = []
    for path in sorted(K8S.glob("*.y*ml")):
        for doc in _docs(path):
            out.append((path.name, doc))
            if doc.get("kind") == "ConfigMap":
                for key, value in (doc.get("data") or {}).items():
                    if key.endswith((".yaml", ".yml")):
                        for inner in yaml.safe_load_all(value):
                            if inner:
                                out.append((f"{path.name}:{key}", inner))
    return out


def test_every_yaml_file_under_infra_parses():
    files = _yaml_files()
    names = {p.relative_to(INFRA).as_posix() for p in files}
    assert {"k8s/raycluster.yaml", "k8s/rayjob.yaml", "k8s/mlflow.yaml", "k8s/retrain-cronjob.yaml",
            "compose/docker-compose.yml", "aws/cluster.yaml"} <= names
    for path in files:
        assert _docs(path), f"{path} has no YAML document"


def test_kubernetes_objects_have_identity():
    docs = _k8s_docs()
    assert len(docs) >= 10
    for where, doc in docs:
        api = doc.get("apiVersion") or ""
        assert api == "v1" or "/" in api, where
        assert doc.get("kind"), where
        meta = doc.get("metadata") or {}
        assert meta.get("name") or meta.get("generateName"), (where, doc["kind"])


# ---- Ray clusters on Kubernetes -----------------------------------------------------------------

def _ray_cluster_specs() -> list[tuple[str, dict]]:
    specs = []
    for where, doc in _k8s_docs():
        if doc["kind"] == "RayCluster":
            specs.append((f"{where}:{doc['metadata']['name']}", doc["spec"]))
        elif doc["kind"] == "RayJob" and "rayClusterSpec" in doc["spec"]:
            name = doc["metadata"].get("name") or doc["metadata"]["generateName"]
            specs.append((f"{where}:{name}", doc["spec"]["rayClusterSpec"]))
    return specs


def _ray_containers(spec: dict) -> list[tuple[str, dict]]:
    groups = [("head", spec["headGroupSpec"])]
    groups += [(g["groupName"], g) for g in spec.get("workerGroupSpecs", [])]
    return [(name, c) for name, g in groups for c in g["template"]["spec"]["containers"]]


def _env(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def _gpus(container: dict) -> tuple[int, int]:
    res = container.get("resources", {})
    return (int(res.get("requests", {}).get("nvidia.com/gpu", 0)),
            int(res.get("limits", {}).get("nvidia.com/gpu", 0)))


def test_every_ray_cluster_spec_is_complete_and_pinned():
    specs = _ray_cluster_specs()
    assert len(specs) >= 3  # raycluster.yaml, rayjob.yaml, the CronJob's RayJob
    for where, spec in specs:
        assert spec["rayVersion"] == RAY_VERSION, where
        head = spec["headGroupSpec"]
        assert head["template"]["spec"]["containers"], where
        assert head.get("serviceType", "ClusterIP") == "ClusterIP", f"{where}: keep the head Service internal"
        assert spec["workerGroupSpecs"], where
        for group in spec["workerGroupSpecs"]:
            assert group["groupName"]
            lo, hi = group["minReplicas"], group["maxReplicas"]
            assert 0 <= lo <= hi and lo <= group.get("replicas", lo) <= hi, (where, group["groupName"])


def test_ray_token_authentication_is_on_everywhere():
    for where, spec in _ray_cluster_specs():
        auth = spec.get("authOptions") or {}
        assert auth.get("mode") == "token", where
        secret = auth["secretName"]
        containers = _ray_containers(spec)
        if spec.get("enableInTreeAutoscaling"):
            containers.append(("autoscaler", spec["autoscalerOptions"]))
        for name, container in containers:
            env = _env(container)
            assert env["RAY_AUTH_MODE"].get("value") == "token", (where, name)
            token = env["RAY_AUTH_TOKEN"]
            assert "value" not in token, (where, name)
            assert token["valueFrom"]["secretKeyRef"] == {"name": secret, "key": "auth_token"}, (where, name)


def test_the_raycluster_autoscales_cpu_and_gpu_groups():
    [doc] = _docs(K8S / "raycluster.yaml")
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == "RayCluster"
    spec = doc["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    gpu = [g for g in groups.values() if all(min(_gpus(c)) >= 1 for c in g["template"]["spec"]["containers"])]
    cpu = [g for g in groups.values() if all(max(_gpus(c)) == 0 for c in g["template"]["spec"]["containers"])]
    assert gpu and cpu, "a GPU worker group (nvidia.com/gpu requested and limited) and a CPU one"
    for g in gpu + cpu:
        assert g["maxReplicas"] > g["minReplicas"], f"{g['groupName']} cannot scale"
    head = spec["headGroupSpec"]
    assert head["rayStartParams"].get("num-cpus") == "0"  # training goes to the workers


def _entrypoint_args(entrypoint: str) -> tuple[list[str], list[str], list[str]]:
    args = shlex.split(entrypoint)
    configs = [args[i + 1] for i, a in enumerate(args) if a == "--config"]
    overrides = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
    return args, configs, overrides


@pytest.mark.parametrize("where,script", [("rayjob.yaml", "jobs/run_pipeline.py"),
                                          ("retrain-cronjob.yaml:rayjob.yaml", "jobs/retrain.py")])
def test_rayjob_entrypoints_run_a_job_script_with_a_valid_config(where, script):
    [job] = [doc for w, doc in _k8s_docs() if w == where and doc["kind"] == "RayJob"]
    assert job["apiVersion"] == "ray.io/v1"
    spec = job["spec"]
    args, configs, overrides = _entrypoint_args(spec["entrypoint"])
    assert args[:2] == ["python", script] and (REPO / script).is_file()
    assert configs and all((REPO / c).is_file() for c in configs)
    cfg = load_config([REPO / c for c in configs], overrides)  # the keys and values the job will get
    # every node reads the same data and checkpoints: both on S3
    assert cfg.data.root.startswith("s3://") and (cfg.tracking.storage_path or "").startswith("s3://")
    assert spec["shutdownAfterJobFinishes"] is True


def test_the_gpu_rayjob_asks_for_gpus():
    [(_, job)] = [(w, d) for w, d in _k8s_docs() if w == "rayjob.yaml"]
    _, configs, overrides = _entrypoint_args(job["spec"]["entrypoint"])
    assert load_config([REPO / c for c in configs], overrides).resources.use_gpu is True
    groups = job["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    assert any(min(_gpus(c)) >= 1 for g in groups for c in g["template"]["spec"]["containers"])


# ---- Deployments and Services -------------------------------------------------------------------

def test_services_select_a_deployment_and_stay_internal():
    docs = [d for _, d in _k8s_docs()]
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    services = [d for d in docs if d["kind"] == "Service"]
    assert deployments and services
    for dep in deployments:
        labels = dep["spec"]["template"]["metadata"]["labels"]
        assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items(), dep["metadata"]["name"]
    for svc in services:
        assert svc["spec"].get("type", "ClusterIP") == "ClusterIP", svc["metadata"]["name"]
        selector = svc["spec"]["selector"]
        [dep] = [d for d in deployments
                 if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()]
        ports = {p["name"]: p["containerPort"] for c in dep["spec"]["template"]["spec"]["containers"]
                 for p in c.get("ports", [])}
        for port in svc["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            assert target in ports or target in ports.values(), (svc["metadata"]["name"], target)


def test_the_mlflow_server_has_auth_s3_artifacts_and_allowed_hosts():
    docs = {(d["kind"], d["metadata"].get("name")): d for _, d in _k8s_docs()}
    dep = docs["Deployment", "recur-mlflow"]
    [container] = dep["spec"]["template"]["spec"]["containers"]
    args = " ".join(container.get("command", []) + container.get("args", []))
    assert "--app-name=basic-auth" in args and "--allowed-hosts=" in args
    assert container["image"].endswith(f":{MLFLOW_VERSION}")
    env = _env(container)
    config = docs["ConfigMap", "recur-mlflow-server"]
    assert config["data"]["artifacts-destination"].startswith("s3://")
    ref = env["MLFLOW_ARTIFACTS_DESTINATION"]["valueFrom"]["configMapKeyRef"]
    assert ref == {"name": "recur-mlflow-server", "key": "artifacts-destination"}
    for name in ("MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY", "PGPASSWORD"):
        assert "secretKeyRef" in env[name]["valueFrom"], name
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"


# ---- credentials in manifests are references ----------------------------------------------------

def _walk(node, path=""):
    if isinstance(node, dict):
        for key, value in node.items():
            yield f"{path}.{key}", key, value
            yield from _walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from _walk(item, f"{path}[{i}]")


def manifest_problems(doc: dict) -> list[str]:
    """Credentials written into a Kubernetes object instead of referenced."""
    problems = []
    if doc.get("kind") == "Secret" and (doc.get("data") or doc.get("stringData")):
        problems.append(f"Secret {doc['metadata'].get('name')} carries values")
    for path, key, value in _walk(doc):
        if key in ("env",) and isinstance(value, list):
            for var in value:
                if SENSITIVE_ENV.search(var["name"]):
                    if "value" in var:
                        problems.append(f"{path}: {var['name']} has an inline value")
                    elif "secretKeyRef" not in (var.get("valueFrom") or {}):
                        problems.append(f"{path}: {var['name']} is not a secretKeyRef")
        if key == "envFrom" and isinstance(value, list):
            allowed = {"secretRef", "configMapRef"}
            problems += [f"{path}: envFrom {src}" for src in value if not allowed >= set(src)]
        if isinstance(value, str):
            for m in URL_WITH_PASSWORD.finditer(value):
                problems.append(f"{path}: a password in the URL {m.group(0)}")
    return problems


def test_every_credential_in_the_manifests_is_a_secret_reference():
    docs = _k8s_docs()
    for where, doc in docs:
        assert not manifest_problems(doc), where
    assert not [d for _, d in docs if d["kind"] == "Secret"], "Secrets are made apart (kubectl create secret)"
    refs = [(e.get("valueFrom") or {}).get("secretKeyRef") for _, d in docs for _, k, v in _walk(d)
            if k == "env" and isinstance(v, list) for e in v]
    referenced = {r["name"] for r in refs if r}
    assert {"recur-ray-token", "recur-mlflow", "recur-s3", "recur-mlflow-server"} <= referenced


def test_the_manifest_check_catches_planted_values():
    planted = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": {"containers": [{
        "name": "c", "image": "i",
        "env": [{"name": "AWS_SECRET_ACCESS_KEY", "value": "x" * 40},
                {"name": "RAY_AUTH_TOKEN", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "t"}}},
                {"name": "MLFLOW_TRACKING_URI", "value": "http://admin:" + "hunter2hunter2@mlflow:5000"}],
        "envFrom": [{"secretRef": {"name": "ok"}}, {"prefix": "X"}],
    }]}}
    problems = manifest_problems(planted)
    assert len(problems) == 4, problems
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "stringData": {"k": "v"}}
    assert manifest_problems(secret)


# ---- docker compose -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def compose() -> dict:
    return _docs(COMPOSE)[0]


def _compose_env(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _is_reference(value: str) -> bool:
    return bool(re.fullmatch(r"\$\{[A-Z0-9_]+(:?[-?][^}]*)?\}", value))


def test_compose_services_have_healthchecks_named_volumes_and_local_ports(compose):
    services = compose["services"]
    assert {"postgres", "minio", "minio-init", "mlflow", "ray-head", "ray-worker"} <= set(services)
    named = set(compose["volumes"])
    for name, service in services.items():
        one_shot = service.get("restart") == "no"
        assert one_shot or "healthcheck" in service, f"{name} has no healthcheck"
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            assert source.startswith("./") or source in named, f"{name}: {source} is not a named volume"
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond 127.0.0.1"
    for stateful in ("postgres", "minio", "mlflow", "ray-head"):
        assert any(v.split(":", 1)[0] in named for v in services[stateful]["volumes"]), stateful
    for name, service in services.items():
        for dep, cond in (service.get("depends_on") or {}).items():
            assert dep in services
            one_shot = services[dep].get("restart") == "no"
            want = "service_completed_successfully" if one_shot else "service_healthy"
            assert cond["condition"] == want, (name, dep)


def test_compose_mlflow_is_postgres_backed_with_auth_and_minio_artifacts(compose):
    mlflow = compose["services"]["mlflow"]
    command = mlflow["command"]
    assert command[command.index("--app-name") + 1] == "basic-auth"
    assert command[command.index("--artifacts-destination") + 1].startswith("s3://")
    assert "--allowed-hosts" in command
    env = _compose_env(mlflow)
    assert env["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql://")
    assert not URL_WITH_PASSWORD.search(env["MLFLOW_BACKEND_STORE_URI"])  # libpq reads PGPASSWORD
    assert env["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert mlflow["image"].endswith(f":{MLFLOW_VERSION}")
    init = compose["services"]["minio-init"]
    assert init["entrypoint"] == ["/bin/sh", "/etc/recur/minio-init.sh"]
    assert "./minio-init.sh:/etc/recur/minio-init.sh:ro" in init["volumes"]
    assert "mc mb --ignore-existing" in MINIO_INIT.read_text()


def test_compose_ray_has_token_auth_and_a_local_dashboard(compose):
    for name in ("ray-head", "ray-worker"):
        env = _compose_env(compose["services"][name])
        assert env["RAY_AUTH_MODE"] == "token" and _is_reference(env["RAY_AUTH_TOKEN"]), name
    head = compose["services"]["ray-head"]
    assert "127.0.0.1:8265:8265" in head["ports"]


def test_compose_credentials_come_from_the_env_file(compose):
    example = (INFRA / "compose" / ".env.example").read_text()
    defined = dict(line.split("=", 1) for line in example.splitlines() if line and not line.startswith("#"))
    code = "\n".join(line for line in COMPOSE.read_text().splitlines() if not line.lstrip().startswith("#"))
    used = set(re.findall(r"\$\{([A-Z0-9_]+)", code))
    assert used <= set(defined), f"not in .env.example: {used - set(defined)}"
    for name, value in defined.items():
        if SENSITIVE_ENV.search(name):
            assert value == "change-me", f"{name} in .env.example must be the placeholder change-me"
    for name, service in compose["services"].items():
        for var, value in _compose_env(service).items():
            if SENSITIVE_ENV.search(var):
                assert _is_reference(value), f"{name}: {var} is not a ${{...}} reference"
    ignored = subprocess.run(["git", "check-ignore", "-q", "infra/compose/.env"], cwd=REPO)
    assert ignored.returncode == 0, "infra/compose/.env must be git-ignored"


# ---- least privilege: what the Ray containers get --------------------------------------------------

# credentials that only MinIO, MLflow and their init jobs may hold: never a Ray container
ADMIN_ENV = re.compile(r"^MINIO_ROOT_|^MLFLOW_AUTH_ADMIN_")
ADMIN_REFERENCE = re.compile(r"\$\{(MINIO_ROOT_[A-Z_]*|MLFLOW_AUTH_ADMIN_[A-Z_]*)")
ADMIN_SECRETS = {"recur-minio-root", "recur-mlflow-server", "recur-mlflow-s3"}


def ray_compose_problems(name: str, service: dict) -> list[str]:
    """Root or admin credentials a compose Ray service receives, by variable name or by value."""
    problems = [f"{name}: env_file {service['env_file']}"] if service.get("env_file") else []
    for var, value in _compose_env(service).items():
        if ADMIN_ENV.search(var) or ADMIN_REFERENCE.search(value):
            problems.append(f"{name}: {var}={value}")
    return problems


def ray_k8s_problems(where: str, container: dict) -> list[str]:
    """Root or admin credentials a Ray container receives: names, secretKeyRefs, envFrom."""
    problems = []
    for var in container.get("env", []):
        ref = (var.get("valueFrom") or {}).get("secretKeyRef") or {}
        if ADMIN_ENV.search(var["name"]) or ref.get("name") in ADMIN_SECRETS:
            problems.append(f"{where}: {var['name']} from {ref or 'a value'}")
    for source in container.get("envFrom", []):
        ref = source.get("secretRef") or {}
        if ref.get("name") in ADMIN_SECRETS:
            problems.append(f"{where}: envFrom {ref['name']}")
    return problems


def _ray_compose_services(compose: dict) -> dict[str, dict]:
    return {name: s for name, s in compose["services"].items()
            if "ray" in str(s.get("image", "")) or "ray start" in " ".join(map(str, s.get("command", [])))}


def test_compose_ray_containers_get_no_root_or_admin_credentials(compose):
    ray = _ray_compose_services(compose)
    assert set(ray) == {"ray-head", "ray-worker"}
    for name, service in ray.items():
        assert not ray_compose_problems(name, service)
        env = _compose_env(service)
        # the scoped users the init jobs create, and those only
        assert env["AWS_ACCESS_KEY_ID"] == "${MINIO_RAY_USER:-recur-ray}", name
        assert env["AWS_SECRET_ACCESS_KEY"].startswith("${MINIO_RAY_PASSWORD:?"), name
        assert env["MLFLOW_TRACKING_USERNAME"] == "${MLFLOW_RAY_USERNAME:-recur}", name
        assert env["MLFLOW_TRACKING_PASSWORD"].startswith("${MLFLOW_RAY_PASSWORD:?"), name
    services = compose["services"]
    assert services["ray-head"]["depends_on"]["mlflow-init"]["condition"] == "service_completed_successfully"
    # the root user stays with MinIO and its init job, the MLflow admin with MLflow and its init job
    holders = {name for name, s in services.items() if ray_compose_problems(name, s)}
    assert holders == {"minio", "minio-init", "mlflow", "mlflow-init"}, holders
    mlflow = _compose_env(services["mlflow"])
    assert mlflow["AWS_ACCESS_KEY_ID"] == "${MINIO_MLFLOW_USER:-recur-mlflow}"
    init = _compose_env(services["mlflow-init"])
    assert init["MLFLOW_RAY_USERNAME"] == env["MLFLOW_TRACKING_USERNAME"]
    assert "./mlflow-user.py:/etc/mlflow/mlflow-user.py:ro" in services["mlflow-init"]["volumes"]


def test_the_compose_check_catches_planted_root_credentials():
    planted = {"environment": {"AWS_ACCESS_KEY_ID": "${MINIO_ROOT_USER:?x}",
                               "MLFLOW_TRACKING_PASSWORD": "${MLFLOW_AUTH_ADMIN_PASSWORD}",
                               "MINIO_ROOT_PASSWORD": "${P}", "RAY_AUTH_MODE": "token"},
               "env_file": ".env"}
    assert len(ray_compose_problems("ray-head", planted)) == 4


def test_minio_init_scopes_the_ray_and_mlflow_users_to_the_bucket():
    script = MINIO_INIT.read_text()
    # both users get a policy, attached and then checked
    assert "mc admin user add" in script and "mc admin policy create" in script
    assert "mc admin policy attach" in script and "mc admin user info" in script
    policies = re.findall(r"<<EOF\n(.*?)\nEOF", script, re.S)
    assert len(policies) == 2
    for policy in policies:
        assert "s3:*" not in policy and "arn:aws:s3:::*" not in policy
        assert re.findall(r'"Resource": \[([^\]]*)\]', policy)
        for resources in re.findall(r'"Resource": \[([^\]]*)\]', policy):
            assert all(r.startswith('"${b}') for r in resources.split(", ")), resources  # the bucket only
    ray, mlflow = policies
    deny = '"Effect": "Deny", "Action": ["s3:PutObject", "s3:DeleteObject"], "Resource": ["${b}/mlflow/*"]'
    assert deny in ray
    assert '"Resource": ["${b}/*"]' not in mlflow and '"Resource": ["${b}/mlflow/*"]' in mlflow


def test_k8s_ray_containers_get_no_root_or_admin_credentials():
    seen = 0
    for where, spec in _ray_cluster_specs():
        containers = _ray_containers(spec)
        if spec.get("enableInTreeAutoscaling"):
            containers.append(("autoscaler", spec["autoscalerOptions"]))
        for name, container in containers:
            seen += 1
            assert not ray_k8s_problems(f"{where}:{name}", container)
    assert seen >= 8
    # the root and admin Secrets are used, by the MinIO and MLflow pods and MinIO's Job only
    users = {}
    for _, doc in _k8s_docs():
        for _, key, value in _walk(doc):
            if key == "secretKeyRef" and value["name"] in ADMIN_SECRETS:
                users.setdefault(value["name"], set()).add(doc["metadata"]["name"])
    assert users == {"recur-minio-root": {"recur-minio", "recur-minio-init"},
                     "recur-mlflow-server": {"recur-mlflow"},
                     "recur-mlflow-s3": {"recur-mlflow", "recur-minio-init"}}, users


def test_the_k8s_check_catches_planted_root_credentials():
    admin = {"secretKeyRef": {"name": "recur-mlflow-server", "key": "admin-password"}}
    planted = {"env": [{"name": "MINIO_ROOT_USER", "value": "root"},
                       {"name": "MLFLOW_TRACKING_PASSWORD", "valueFrom": admin},
                       {"name": "AWS_ACCESS_KEY_ID",
                        "valueFrom": {"secretKeyRef": {"name": "recur-s3", "key": "access-key-id"}}}],
               "envFrom": [{"secretRef": {"name": "recur-minio-root"}}]}
    assert len(ray_k8s_problems("x", planted)) == 3


# ---- NetworkPolicy ------------------------------------------------------------------------------

RAY_POD = {"ray.io/is-ray-node": "yes"}  # KubeRay's label on every head and worker pod


def _pod_labels(kind: str, component: str) -> dict[str, str]:
    [doc] = [d for _, d in _k8s_docs()
             if d["kind"] == kind and d["metadata"]["labels"].get("app.kubernetes.io/component") == component]
    return doc["spec"]["template"]["metadata"]["labels"]


def _policies_selecting(labels: dict[str, str]) -> list[dict]:
    out = []
    for _, doc in _k8s_docs():
        if doc["kind"] == "NetworkPolicy":
            selector = doc["spec"]["podSelector"].get("matchLabels", {})
            if selector.items() <= labels.items() and "Ingress" in doc["spec"]["policyTypes"]:
                out.append(doc)
    return out


def _peers(policy: dict) -> list[tuple[dict, dict | None, list]]:
    """(podSelector labels, namespaceSelector or None, ports) for every peer of every ingress rule."""
    return [(peer.get("podSelector", {}).get("matchLabels", {}), peer.get("namespaceSelector"),
             rule.get("ports", [])) for rule in policy["spec"].get("ingress", []) for peer in rule["from"]]


def test_a_networkpolicy_lets_only_ray_and_mlflow_reach_minio():
    minio = _pod_labels("Deployment", "minio")
    [policy] = _policies_selecting(minio)
    mlflow, init = _pod_labels("Deployment", "mlflow"), _pod_labels("Job", "minio-init")
    peers = _peers(policy)
    for labels, namespaces, ports in peers:
        assert namespaces is None and labels, "no peer outside the namespace, none that is every pod"
        assert labels == RAY_POD or labels.items() <= mlflow.items() or labels.items() <= init.items(), labels
        assert [p["port"] for p in ports] == [9000]  # the S3 API; the console only by port-forward
    assert {tuple(sorted(labels.items())) for labels, _, _ in peers} >= {tuple(RAY_POD.items())}
    assert any(labels.items() <= mlflow.items() for labels, _, _ in peers)


def test_a_networkpolicy_lets_only_ray_reach_mlflow():
    [policy] = _policies_selecting(_pod_labels("Deployment", "mlflow"))
    peers = _peers(policy)
    assert peers and all(labels == RAY_POD and ns is None for labels, ns, _ in peers), peers
    assert all([p["port"] for p in ports] == [5000] for _, _, ports in peers)


def test_a_networkpolicy_keeps_the_ray_ports_inside_the_namespace():
    [policy] = _policies_selecting(RAY_POD)
    assert policy["spec"]["podSelector"]["matchLabels"] == RAY_POD
    for rule in policy["spec"]["ingress"]:
        assert rule.get("from"), "a rule without `from` admits everyone"
        for peer in rule["from"]:
            assert "ipBlock" not in peer
            if "namespaceSelector" in peer:  # the KubeRay operator: its pods, and the dashboard only
                assert peer["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "kuberay-operator"}
                assert [p["port"] for p in rule["ports"]] == [8265]
            else:
                assert peer["podSelector"] == {}  # any pod of this namespace


# ---- images pinned ------------------------------------------------------------------------------

def _images() -> list[tuple[str, str]]:
    """(where, image) for every image an infra file names: `image:` keys (also inside ConfigMaps),
    Dockerfile FROM and ARG defaults, compose build args, the AWS launcher's images."""
    trees = _k8s_docs() + [(p.name, d) for p in _yaml_files() if p.parent != K8S for d in _docs(p)]
    found = [(where, value) for where, doc in trees for _, key, value in _walk(doc)
             if key in ("image", "head_image", "worker_image", "RAY_IMAGE") and isinstance(value, str)]
    for path in (INFRA / "docker").glob("*Dockerfile"):
        text = path.read_text()
        found += [(path.name, m) for m in re.findall(r"^FROM\s+(\S+)", text, re.M)]
        found += [(path.name, m) for m in re.findall(r"^ARG \w*IMAGE=(\S+)", text, re.M)]
    return found


def image_problem(image: str) -> str | None:
    """Why `image` is not pinned: no tag, or :latest. A ${VAR} reference is resolved elsewhere."""
    if image.startswith("$"):
        return None
    name, _, digest = image.partition("@")
    last = name.rsplit("/", 1)[-1]
    if ":" not in last:
        return None if digest else f"{image} has no tag"
    if last.rsplit(":", 1)[1] == "latest":
        return f"{image} is :latest"
    return None


def test_no_image_in_infra_is_latest_or_untagged():
    images = _images()
    names = {image for _, image in images}
    assert {"minio/minio:RELEASE.2025-04-22T22-12-26Z", "minio/mc:RELEASE.2025-04-16T18-13-26Z"} <= names
    assert any(i.startswith("rayproject/ray:") for i in names) and len(images) >= 15
    assert not [f"{where}: {problem}" for where, image in images if (problem := image_problem(image))]
    for image in ("minio/minio", "minio/mc:latest", "registry.example.com:5000/recur", "postgres"):
        assert image_problem(image), image
    for image in ("registry.example.com:5000/recur:0.1.0", "postgres@sha256:" + "0" * 64, "python:3.11-slim"):
        assert not image_problem(image), image


# ---- AWS cluster launcher -----------------------------------------------------------------------

def test_aws_cluster_has_a_cpu_head_gpu_workers_and_token_auth():
    config = _docs(AWS)[0]
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    workers = [t for name, t in types.items() if name != config["head_node_type"]]
    gpu = [t for t in workers if t["resources"].get("GPU", 0) >= 1]
    assert gpu and all(0 <= t["min_workers"] <= t["max_workers"] for t in gpu)
    docker = config["docker"]
    assert "--env RAY_AUTH_MODE=token" in docker["run_options"]
    starts = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    assert all("RAY_AUTH_MODE=token" in c for c in starts if "ray start" in c)
    [head_start] = [c for c in config["head_start_ray_commands"] if "ray start" in c]
    assert "--dashboard-host=127.0.0.1" in head_start
    assert "/home/ray/.ray/auth_token" in config["file_mounts"]


def test_aws_cluster_passes_rays_own_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config

    ours = _docs(AWS)[0]
    prepared = prepare_config(ours)
    assert validate_config(prepared) is None  # raises a jsonschema ValidationError naming the key
    # Ray's defaults filled in around ours, never in place of them
    assert prepared["head_node_type"] == ours["head_node_type"]
    assert set(ours["available_node_types"]) <= set(prepared["available_node_types"])
    assert prepared["provider"]["type"] == "aws"


# ---- images -------------------------------------------------------------------------------------

def test_every_ray_image_is_the_pinned_ray_version():
    tags = {}
    for path in INFRA.rglob("*"):
        if path.is_file():
            for m in RAY_IMAGE.finditer(path.read_text(errors="replace")):
                tags.setdefault(m.group("tag"), []).append(path.relative_to(REPO).as_posix())
    assert len(tags) >= 2, tags  # the CPU and GPU images at least
    pythons = set()
    for tag, where in tags.items():
        m = re.fullmatch(r"(?P<version>\d+\.\d+\.\d+)-(?P<py>py3\d+)(-gpu|-cu\d+)?", tag)
        assert m, f"rayproject/ray:{tag} ({where}) is not VERSION-pyXY[-gpu]"
        assert m.group("version") == RAY_VERSION, f"rayproject/ray:{tag} in {where}, ray pinned {RAY_VERSION}"
        pythons.add(m.group("py"))
    assert len(pythons) == 1, pythons
    dockerfile = (INFRA / "docker" / "Dockerfile").read_text()
    assert f"ARG RAY_IMAGE=rayproject/ray:{RAY_VERSION}-" in dockerfile
    assert f"ARG MLFLOW_VERSION={MLFLOW_VERSION}" in (INFRA / "docker" / "mlflow.Dockerfile").read_text()


# ---- plaintext credentials anywhere in the repository -------------------------------------------

PLACEHOLDER = re.compile(r"^(change-?me|replace-?me|example|test|testing|dummy|placeholder|true|false|"
                         r"password|passwd|pass|pw|secret|x+|\*+|<[^>]*>)$", re.I)
ALLOW = "pragma: allowlist secret"  # on a line that holds a fake credential on purpose
RULES = {
    "AWS access key id": re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
    "private key": re.compile(r"-----BEGIN ([A-Z]+ )*PRIVATE KEY-----"),
    "aws_secret_access_key value": re.compile(
        r"aws_secret_access_key\s*[=:]\s*['\"]?(?P<value>[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+])", re.I),
}
YAML_SECRET = re.compile(
    r"^\s*-?\s*['\"]?(?P<key>[\w.\-]*(password|passwd|secret|token|secret[_-]?key|access[_-]?key))['\"]?"
    r"\s*:\s*(?P<value>\S.*?)\s*$", re.I)
# NAME=value: .env files, shell (export), Dockerfiles (ENV/ARG), YAML lists (- NAME=value)
ENV_SECRET = re.compile(r"^\s*(export\s+|ENV\s+|ARG\s+|-\s+['\"]?)?"
                        r"(?P<key>[A-Z0-9_]*(PASSWORD|SECRET|TOKEN|ACCESS_KEY)[A-Z0-9_]*)=(?P<value>.*)$")


def _is_placeholder(value: str) -> bool:
    value = value.strip().strip("'\"")
    return (not value or PLACEHOLDER.match(value) is not None or "EXAMPLE" in value
            or value.startswith(("$", "{", "|", ">", "&", "*")) or value in ("null", "~"))


def find_plaintext_credentials(path: Path, text: str) -> list[str]:
    """Lines of `text` (the file `path`) that hold a credential in plain text."""
    found = []
    is_yaml = path.suffix in (".yaml", ".yml")
    is_env = (path.name.startswith(".env") or path.suffix in (".env", ".sh", ".yaml", ".yml")
              or "Dockerfile" in path.name)
    for n, line in enumerate(text.splitlines(), 1):
        if ALLOW in line:
            continue
        where = f"{path}:{n}"
        for rule, pattern in RULES.items():
            m = pattern.search(line)
            if m and not _is_placeholder(m.groupdict().get("value") or m.group(0)):
                found.append(f"{where}: {rule}")
        # Python is left out of this rule: recur's redaction code and its tests build fake URLs
        for m in URL_WITH_PASSWORD.finditer(line) if path.suffix != ".py" else ():
            if not _is_placeholder(m.group("password")):
                found.append(f"{where}: password in a URL")
        if is_yaml and not line.lstrip().startswith("#"):
            m = YAML_SECRET.match(line)
            if m and not _is_placeholder(m.group("value").split(" #")[0]):
                found.append(f"{where}: {m.group('key')} has a literal value")
        if is_env:
            m = ENV_SECRET.match(line)
            if m and not _is_placeholder(m.group("value").rstrip("'\"")):
                found.append(f"{where}: {m.group('key')} has a literal value")
    return found


def _repository_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         cwd=REPO, capture_output=True, check=True).stdout.decode()
    return [REPO / p for p in out.split("\0") if p and (REPO / p).is_file()]


def scan(files: list[Path]) -> tuple[int, list[str]]:
    scanned, found = 0, []
    for path in files:
        if path.stat().st_size > 2_000_000:
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue  # binary
        scanned += 1
        found += find_plaintext_credentials(path, text)
    return scanned, found


def test_no_plaintext_credentials_in_the_repository():
    files = _repository_files()
    scanned, found = scan(files)
    names = {p.relative_to(REPO).as_posix() for p in files}
    assert {"infra/compose/docker-compose.yml", "infra/compose/.env.example", "infra/k8s/mlflow.yaml",
            "infra/local/mlflow-server.sh", "pyproject.toml"} <= names
    assert scanned >= 50, f"only {scanned} files scanned"
    assert not found, "\n".join(found)


# planted strings are assembled here so that this file itself never holds one
_KEY_ID = "AKIA" + "Q3XZ7WPLM2RT5VBN"
_SECRET = "kq2V" + "x9Lm4Pz7Rt1Yw8Nb3Cd6Fg0Hj5Ks2Qa7Ue9I"  # 40 characters, as AWS's are
_PRIVATE = "-----BEGIN " + "RSA PRIVATE KEY-----"


@pytest.mark.parametrize("name,text,rule", [
    ("notes.md", f"key id {_KEY_ID} in a note", "AWS access key id"),
    ("credentials", f"[default]\naws_secret_access_key = {_SECRET}\n", "aws_secret_access_key value"),
    ("settings.py", f'client(aws_secret_access_key="{_SECRET}")', "aws_secret_access_key value"),
    ("id_rsa", f"{_PRIVATE}\nMIIEow...\n", "private key"),
    ("values.yaml", "db:\n  password: " + "hunter2hunter2\n", "password has a literal value"),
    ("compose.yml", "environment:\n  MINIO_ROOT_PASSWORD: " + "minio-root-pw\n", "has a literal value"),
    ("job.yaml", "env:\n  - MLFLOW_TRACKING_TOKEN: " + "dapi0123456789\n", "has a literal value"),
    (".env", "RAY_AUTH_TOKEN=" + "3f1c0ffee\n", "RAY_AUTH_TOKEN has a literal value"),
    ("compose.yaml", "environment:\n  - POSTGRES_PASSWORD=" + "pg-pass-1\n", "POSTGRES_PASSWORD has a"),
    ("Dockerfile", "FROM x\nENV AWS_SECRET_ACCESS_KEY=" + "abc123\n", "AWS_SECRET_ACCESS_KEY has a literal"),
    ("start.sh", "export MLFLOW_TRACKING_PASSWORD=" + "'hunter2'\n", "MLFLOW_TRACKING_PASSWORD has a"),
    ("run.sh", "export MLFLOW_TRACKING_URI=http://admin:" + "s3cretpass@mlflow:5000\n", "password in a URL"),
])
def test_the_scan_finds_planted_credentials(tmp_path, name, text, rule):
    path = tmp_path / name
    path.write_text(text)
    scanned, found = scan([path])
    assert scanned == 1
    assert any(rule in f for f in found), found


@pytest.mark.parametrize("name,text", [
    ("values.yaml", "password: ${POSTGRES_PASSWORD:?set it}\nsecretName: recur-ray-token\n"
                    "token: change-me\nkey: auth_token\n"),
    ("job.yaml", "env:\n  - name: RAY_AUTH_TOKEN\n    valueFrom:\n"
                 "      secretKeyRef: {name: t, key: auth_token}\n"),
    (".env.example", "POSTGRES_PASSWORD=change-me\nRAY_AUTH_TOKEN=\n"),
    ("start.sh", 'export MLFLOW_TRACKING_PASSWORD="$MLFLOW_AUTH_ADMIN_PASSWORD"\n'
                 "POSTGRES_PASSWORD=$(random)\n"),
    ("run.sh", 'mc alias set local http://minio:9000 "$USER" "$PASSWORD"\nhttp://${U}:${P}@host\n'),
    ("docs.md", "aws docs use AKIA" + "IOSFODNN7EXAMPLE as their example\n"),
    ("test_x.py", f'fake = "{_KEY_ID}"  # {ALLOW}\n'),
])
def test_the_scan_leaves_references_and_placeholders(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    assert scan([path]) == (1, [])
