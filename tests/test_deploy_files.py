"""Static validation of the deployment files: Dockerfile, Compose, Kubernetes, systemd, nginx.

Offline and fast (no Docker engine, no cluster, no network). `hadolint`, `check-jsonschema`
and `kubernetes-validate` come with the dev extras (`pip install -e '.[dev]'`): a missing one
fails its test with that hint. `systemd-analyze` and `nginx` are optional: without them the
unit and the site are only checked statically. `NGINX_BIN` may name an nginx binary that is
not on PATH (e.g. one unpacked with `apt-get download nginx && dpkg -x`).
"""

from __future__ import annotations

import datetime
import fnmatch
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
DOCKERFILE = ROOT / "Dockerfile"
ENTRYPOINT = DEPLOY / "docker" / "entrypoint.sh"
COMPOSE = DEPLOY / "docker-compose.yml"
UNIT = DEPLOY / "systemd" / "swarm-runtime.service"
NGINX_SITE = DEPLOY / "nginx" / "swarm-runtime.conf"

K8S_VERSION = "1.30.0"
SECRET_NAME = "swarm-runtime"
SECRET_ENV = ("DATABASE_URL", "RUNTIME_JWT_SECRET", "RUNTIME_SECRETS_KEY", "GITHUB_WEBHOOK_SECRET")
SECRETISH = re.compile(r"SECRET|KEY|PASSWORD|TOKEN|DATABASE_URL")
PORT = 3210
SUBPROCESS_TIMEOUT_S = 30

YAML_FILES = sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yml", ".yaml"))
MANIFESTS = sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


# --- helpers -------------------------------------------------------------------------------


def _dev_tool(name: str) -> str:
    """The dev-extras binary `name`: next to this interpreter (the venv), else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if found is None:
        pytest.fail(
            f"`{name}` not found next to {sys.executable} or on PATH; it is in the dev "
            "extras: pip install -e '.[dev]'"
        )
    return found


def _run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    kwargs.setdefault("cwd", ROOT)
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_S, check=False, **kwargs
    )


def _output(proc: subprocess.CompletedProcess[str]) -> str:
    return f"exit {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"


def _load(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc is not None]


def _k8s_objects() -> list[dict[str, Any]]:
    return [doc for path in MANIFESTS for doc in _load(path)]


def _one(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        o
        for o in _k8s_objects()
        if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected exactly one {kind} {name or ''}, found {len(found)}"
    return found[0]


def _pod_specs() -> Iterator[tuple[str, dict[str, Any]]]:
    for obj in _k8s_objects():
        if obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            yield f"{obj['kind']}/{obj['metadata']['name']}", obj["spec"]["template"]["spec"]
        elif obj["kind"] == "CronJob":
            yield (
                f"CronJob/{obj['metadata']['name']}",
                obj["spec"]["jobTemplate"]["spec"]["template"]["spec"],
            )
        elif obj["kind"] == "Pod":
            yield f"Pod/{obj['metadata']['name']}", obj["spec"]


def _containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod.get("initContainers", []), *pod["containers"]]


def _server() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(Deployment, its pod spec, its runtime container)."""
    deployment = _one("Deployment", "swarm-runtime")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return deployment, pod, container


def _labels_match(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


# --- every YAML file ---------------------------------------------------------------------


def test_deploy_has_yaml_files() -> None:
    names = {p.relative_to(DEPLOY).as_posix() for p in YAML_FILES}
    assert "docker-compose.yml" in names
    for name in ("deployment", "service", "ingress", "hpa", "pdb", "migrate-job"):
        assert f"kubernetes/{name}.yaml" in names


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: p.relative_to(DEPLOY).as_posix())
def test_yaml_parses(path: Path) -> None:
    docs = _load(path)
    assert docs, f"{path} holds no YAML document"
    assert all(isinstance(doc, dict) for doc in docs), f"{path}: every document is a mapping"


# --- Kubernetes ---------------------------------------------------------------------------


def test_kubernetes_manifests_validate_strictly() -> None:
    tool = _dev_tool("kubernetes-validate")
    proc = _run([tool, "--strict", "--quiet", "-k", K8S_VERSION, *map(str, MANIFESTS)])
    assert proc.returncode == 0, _output(proc)
    for obj in _k8s_objects():
        assert obj.get("apiVersion") and obj.get("kind") and obj["metadata"].get("name"), obj


def test_kustomization_lists_every_manifest_but_the_migrate_job() -> None:
    (kustomization,) = _load(K8S / "kustomization.yaml")
    assert kustomization["kind"] == "Kustomization"
    listed = set(kustomization["resources"])
    for name in listed:
        assert (K8S / name).is_file(), f"kustomization.yaml lists missing {name}"
    expected = {p.name for p in MANIFESTS} - {"migrate-job.yaml"}
    assert listed == expected


def test_deployment_replicas_rollout_and_probes() -> None:
    deployment, _, container = _server()
    assert deployment["spec"]["replicas"] >= 2
    rolling = deployment["spec"]["strategy"]["rollingUpdate"]
    assert rolling["maxUnavailable"] == 0, "a new pod must be ready before an old one stops"
    assert _labels_match(
        deployment["spec"]["selector"]["matchLabels"],
        deployment["spec"]["template"]["metadata"]["labels"],
    )

    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": PORT}
    probes = {
        kind: container[kind]["httpGet"]
        for kind in ("readinessProbe", "livenessProbe", "startupProbe")
    }
    assert probes["readinessProbe"]["path"] == "/readyz"
    assert probes["livenessProbe"]["path"] == "/healthz"
    assert probes["startupProbe"]["path"] == "/healthz"
    for probe in probes.values():
        assert probe["port"] in ports or probe["port"] == PORT
    assert container["args"] == ["serve"]


def test_deployment_drains_before_sigterm() -> None:
    _, pod, container = _server()
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep", command
    pre_stop_s = int(command[1])
    assert pre_stop_s >= 5, "the endpoint removal needs a few seconds to propagate"
    # preStop + the runtime's drain after SIGTERM must fit in the grace period.
    assert pod["terminationGracePeriodSeconds"] >= pre_stop_s + 20


def test_workloads_have_resources_and_run_locked_down() -> None:
    specs = dict(_pod_specs())
    assert {"Deployment/swarm-runtime", "Job/swarm-runtime-migrate"} <= specs.keys()
    for where, pod in specs.items():
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        assert pod["securityContext"].get("runAsUser", 1) != 0, where
        assert pod.get("automountServiceAccountToken") is False, where
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for container in _containers(pod):
            here = f"{where} container {container['name']}"
            resources = container["resources"]
            for section in ("requests", "limits"):
                assert {"cpu", "memory"} <= resources[section].keys(), f"{here}: {section}"
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, here
            assert security["allowPrivilegeEscalation"] is False, here
            assert security["capabilities"]["drop"] == ["ALL"], here
            tmp = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
            assert len(tmp) == 1, f"{here}: /tmp must be writable (read-only root fs)"
            assert "emptyDir" in volumes[tmp[0]["name"]], f"{here}: /tmp is an emptyDir"
            assert not container["image"].endswith(":latest"), here


def test_no_literal_secrets_in_kubernetes() -> None:
    assert not [o for o in _k8s_objects() if o["kind"] == "Secret"], (
        "no Secret is committed; README.md documents `kubectl create secret generic`"
    )
    for obj in _k8s_objects():
        if obj["kind"] == "ConfigMap":
            leaked = [k for k in obj.get("data", {}) if SECRETISH.search(k.upper())]
            assert not leaked, f"ConfigMap {obj['metadata']['name']} holds secrets: {leaked}"
    for where, pod in _pod_specs():
        for container in _containers(pod):
            for env in container.get("env", []):
                if not SECRETISH.search(env["name"]):
                    continue
                here = f"{where} {container['name']} env {env['name']}"
                assert "value" not in env, f"{here}: literal secret value"
                ref = env["valueFrom"]["secretKeyRef"]
                assert ref["name"] == SECRET_NAME, here
                assert ref["key"], here
            for source in container.get("envFrom", []):
                assert "configMapRef" not in source or "secretRef" in source, (
                    f"{where}: keep secrets out of envFrom configMaps"
                )
    _, _, container = _server()
    from_secret = {e["name"] for e in container["env"] if "secretKeyRef" in e.get("valueFrom", {})}
    assert set(SECRET_ENV) <= from_secret


def test_service_selects_the_deployment_pods() -> None:
    deployment, _, container = _server()
    service = _one("Service", "swarm-runtime")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert _labels_match(service["spec"]["selector"], pod_labels)
    port_names = {p["name"] for p in container["ports"]}
    for port in service["spec"]["ports"]:
        assert port["targetPort"] in port_names or port["targetPort"] == PORT


def test_ingress_routes_api_and_websocket() -> None:
    service = _one("Service", "swarm-runtime")
    service_ports = {p["name"] for p in service["spec"]["ports"]} | {
        p["port"] for p in service["spec"]["ports"]
    }
    ingresses = [o for o in _k8s_objects() if o["kind"] == "Ingress"]
    paths: dict[str, dict[str, Any]] = {}
    for ingress in ingresses:
        annotations = ingress["metadata"]["annotations"]
        assert annotations["nginx.ingress.kubernetes.io/proxy-body-size"] == "1m"
        assert ingress["spec"]["ingressClassName"] == "nginx"
        assert ingress["spec"]["tls"], "TLS terminates at the ingress"
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                assert backend["name"] == "swarm-runtime"
                assert backend["port"].get("name", backend["port"].get("number")) in service_ports
                paths[path["path"]] = annotations
    assert {"/", "/ws"} <= paths.keys()
    for key in ("proxy-read-timeout", "proxy-send-timeout"):
        assert int(paths["/ws"][f"nginx.ingress.kubernetes.io/{key}"]) >= 3600, key
        assert int(paths["/"][f"nginx.ingress.kubernetes.io/{key}"]) <= 300, key


def test_hpa_scales_the_deployment_on_cpu() -> None:
    hpa = _one("HorizontalPodAutoscaler", "swarm-runtime")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "swarm-runtime",
    }
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["type"] == "Utilization"


def test_pdb_covers_the_deployment() -> None:
    deployment, _, _ = _server()
    pdb = _one("PodDisruptionBudget", "swarm-runtime")
    assert pdb["apiVersion"] == "policy/v1"
    assert _labels_match(
        pdb["spec"]["selector"]["matchLabels"], deployment["spec"]["template"]["metadata"]["labels"]
    )
    assert pdb["spec"].get("maxUnavailable") == 1 or pdb["spec"].get("minAvailable") == 1


def test_migrate_job_runs_migrate_with_the_release_image() -> None:
    _, _, server = _server()
    job = _one("Job", "swarm-runtime-migrate")
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"] == ["migrate"]
    assert container["image"] == server["image"]
    assert pod["restartPolicy"] == "Never"
    assert job["spec"]["backoffLimit"] <= 3
    assert "DATABASE_URL" in {e["name"] for e in container["env"]}
    # A Job, not an initContainer, so replicas never race on the schema.
    assert "initContainers" not in _server()[1]


# --- Docker Compose -----------------------------------------------------------------------


def test_compose_matches_the_compose_spec() -> None:
    tool = _dev_tool("check-jsonschema")
    proc = _run([tool, "--builtin-schema", "vendor.compose-spec", str(COMPOSE)])
    assert proc.returncode == 0, _output(proc)


def _compose() -> dict[str, Any]:
    (compose,) = _load(COMPOSE)
    return compose


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def test_compose_services_volumes_and_healthchecks() -> None:
    compose = _compose()
    services = compose["services"]
    db, runtime = services["db"], services["runtime"]

    assert db["image"] == "postgres:15"
    volume = db["volumes"][0].split(":")
    assert volume[1] == "/var/lib/postgresql/data"
    assert volume[0] in compose["volumes"], "PostgreSQL data lives in a named volume"
    assert "ports" not in db, "the database is not published on the host"
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])

    assert "/healthz" in " ".join(runtime["healthcheck"]["test"])
    assert runtime["depends_on"]["db"] == {"condition": "service_healthy"}
    assert runtime["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
    assert services["migrate"]["command"] == ["migrate"]
    assert runtime["build"]["context"] == ".."
    assert (DEPLOY / runtime["build"]["context"] / runtime["build"]["dockerfile"]).is_file()
    assert runtime["stop_signal"] == "SIGTERM"
    for port in runtime.get("ports", []):
        assert str(port).endswith(f":{PORT}")


def test_compose_has_no_literal_secrets() -> None:
    required = re.compile(r"^\$\{(?P<name>[A-Z0-9_]+):\?[^}]*\}$")
    services = _compose()["services"]
    for name, service in services.items():
        for key, value in _environment(service).items():
            if SECRETISH.search(key):
                match = required.match(value)
                assert match, f"{name}.{key} must be `${{{key}:?...}}`, not a literal"
                assert match["name"] == key
        for env_file in service.get("env_file", []):
            assert not str(env_file).endswith(".example"), "env_file is the git-ignored .env"
    runtime_env = _environment(services["runtime"])
    assert set(SECRET_ENV) <= runtime_env.keys()


def test_env_example_lists_names_without_values() -> None:
    example = DEPLOY / ".env.example"
    entries = {}
    for line in example.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            entries[name.strip()] = value.strip()
    assert {*SECRET_ENV, "POSTGRES_PASSWORD"} <= entries.keys()
    assert all(value == "" for value in entries.values()), f"values committed: {entries}"
    ignored = (DEPLOY / ".gitignore").read_text(encoding="utf-8").split()
    assert ".env" in ignored


# --- Dockerfile ---------------------------------------------------------------------------


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        instructions.append((keyword.upper(), args.strip()))
        pending = ""
    return instructions


def test_hadolint_passes() -> None:
    tool = _dev_tool("hadolint")
    proc = _run([tool, "--no-color", "--config", str(ROOT / ".hadolint.yaml"), str(DOCKERFILE)])
    assert proc.returncode == 0 and not proc.stdout.strip(), _output(proc)


def test_dockerfile_shape() -> None:
    instructions = _dockerfile_instructions()
    by_kind: dict[str, list[str]] = {}
    for kind, args in instructions:
        by_kind.setdefault(kind, []).append(args)

    froms = by_kind["FROM"]
    assert len(froms) >= 2, "multi-stage"
    assert all(f.split()[0] == "python:3.11-slim-bookworm" for f in froms), froms
    last_from = max(i for i, (kind, _) in enumerate(instructions) if kind == "FROM")
    build_stage = " ".join(a for k, a in instructions[:last_from] if k == "RUN")
    assert "pip wheel" in build_stage, "wheels are built in the first stage"
    final = instructions[last_from:]

    users = [a for k, a in final if k == "USER"]
    assert users, "the final stage drops root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "numeric non-root uid (k8s runAsNonRoot checks it)"

    healthcheck = by_kind["HEALTHCHECK"][-1]
    assert "/healthz" in healthcheck and "urllib" in healthcheck
    assert "curl" not in healthcheck and "wget" not in healthcheck
    assert by_kind["EXPOSE"] == [str(PORT)]
    assert by_kind["STOPSIGNAL"] == ["SIGTERM"]

    copied = " ".join(a for k, a in final if k == "COPY")
    for needed in ("app_functions/", "plugins/", "schema.json", "deploy/docker/entrypoint.sh"):
        assert needed in copied, f"the image must contain {needed}"
    for kind in ("ENTRYPOINT", "CMD"):
        assert by_kind[kind][-1].startswith("["), f"{kind} in exec (JSON) form"


def _dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore semantics, enough for this file: the last match wins, a
    pattern matching a parent directory excludes its contents, `!` re-includes."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.removeprefix("!").strip("/")
        variants = {pattern, pattern.removeprefix("**/")}
        if any(fnmatch.fnmatchcase(p, v) for p in prefixes for v in variants):
            ignored = not negate
    return ignored


def test_dockerignore_keeps_the_build_inputs_and_drops_secrets() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    for needed in (
        "pyproject.toml",
        "README.md",
        "runtime/__init__.py",
        "app_functions/tickets.py",
        "plugins/github.py",
        "schema.json",
        "deploy/docker/entrypoint.sh",
    ):
        assert not _dockerignored(needed, patterns), f"{needed} is needed by the build"
    for dropped in (
        ".git/HEAD",
        ".venv/bin/python",
        ".env",
        "deploy/.env",
        ".runtime/pg/postmaster.pid",
        "runtime/__pycache__/x.pyc",
        "tests/test_deploy_files.py",
        "deploy/kubernetes/deployment.yaml",
    ):
        assert _dockerignored(dropped, patterns), f"{dropped} must stay out of the image"


# --- the image entrypoint -----------------------------------------------------------------


@pytest.fixture
def fake_runtime(tmp_path: Path) -> Path:
    """A `swarm-runtime` on PATH that prints its arguments instead of serving."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "swarm-runtime"
    fake.write_text('#!/bin/sh\necho "swarm-runtime $*"\n', encoding="utf-8")
    fake.chmod(0o755)
    return bin_dir


def _entrypoint(bin_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {"PATH": f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin"}
    return _run(["/bin/sh", str(ENTRYPOINT), *args], env={**base, **env})


def test_entrypoint_is_valid_sh() -> None:
    proc = _run(["/bin/sh", "-n", str(ENTRYPOINT)])
    assert proc.returncode == 0, _output(proc)
    assert os.access(ENTRYPOINT, os.X_OK), "commit it executable (git keeps the bit)"


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        ((), {}, f"serve --host 0.0.0.0 --port {PORT} --workers 2"),
        (("serve",), {"RUNTIME_WORKERS": "4"}, f"serve --host 0.0.0.0 --port {PORT} --workers 4"),
        (
            ("serve", "--workers", "8"),
            {},
            f"serve --host 0.0.0.0 --port {PORT} --workers 2 --workers 8",
        ),
        (("--workers", "3"), {}, f"serve --host 0.0.0.0 --port {PORT} --workers 2 --workers 3"),
        (("migrate",), {}, "migrate"),
        (("swarm-runtime", "backup", "x.dump"), {}, "backup x.dump"),
    ],
)
def test_entrypoint_builds_the_command(
    fake_runtime: Path, args: tuple[str, ...], env: dict[str, str], expected: str
) -> None:
    proc = _entrypoint(fake_runtime, *args, DATABASE_URL="postgresql://db/x", **env)
    assert proc.returncode == 0, _output(proc)
    assert proc.stdout.strip() == f"swarm-runtime {expected}"


@pytest.mark.parametrize("args", [(), ("serve",), ("migrate",), ("backup",), ("restore",)])
def test_entrypoint_requires_database_url(fake_runtime: Path, args: tuple[str, ...]) -> None:
    proc = _entrypoint(fake_runtime, *args)
    assert proc.returncode == 64, _output(proc)
    assert "DATABASE_URL is required" in proc.stderr
    assert proc.stdout == "", "the runtime must not start"


def test_entrypoint_accepts_database_url_flag(fake_runtime: Path) -> None:
    proc = _entrypoint(fake_runtime, "migrate", "--database-url=postgresql://db/x")
    assert proc.returncode == 0, _output(proc)
    assert proc.stdout.strip() == "swarm-runtime migrate --database-url=postgresql://db/x"


def test_entrypoint_passes_other_commands_through(fake_runtime: Path) -> None:
    assert _entrypoint(fake_runtime, "check").stdout.strip() == "swarm-runtime check"
    assert _entrypoint(fake_runtime, "echo", "hello").stdout.strip() == "hello"


# --- systemd ------------------------------------------------------------------------------


def _unit() -> dict[str, dict[str, list[str]]]:
    """Sections -> key -> values (systemd allows repeated keys, so no configparser)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in UNIT.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"{UNIT}: {line!r} outside a section"
        assert "=" in line and not line.endswith("\\"), f"{UNIT}: cannot parse {line!r}"
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def test_systemd_unit_keys() -> None:
    unit = _unit()
    assert unit.keys() == {"Unit", "Service", "Install"}
    service = unit["Service"]

    def one(key: str) -> str:
        assert key in service, f"[Service] {key}= is required"
        return service[key][-1]

    assert one("User") == "swarm"
    assert one("EnvironmentFile") == "/etc/swarm-runtime/env"
    exec_start = one("ExecStart").split()
    assert exec_start[:2] == ["/opt/swarm-runtime/venv/bin/swarm-runtime", "serve"]
    assert exec_start[exec_start.index("--host") + 1] == "127.0.0.1", "nginx fronts it"
    assert exec_start[exec_start.index("--port") + 1] == str(PORT)
    assert any("DATABASE_URL" in pre for pre in service.get("ExecStartPre", [])), (
        "refuse to start without DATABASE_URL (serve would start an embedded PostgreSQL)"
    )
    assert one("Restart") == "on-failure"
    assert one("KillSignal") == "SIGTERM"
    assert one("TimeoutStopSec")
    assert one("NoNewPrivileges") == "yes"
    assert one("ProtectSystem") == "strict"
    assert one("PrivateTmp") == "yes"
    assert one("ReadWritePaths")
    for value in service.get("Environment", []):
        for assignment in value.split():
            name = assignment.split("=", 1)[0].strip('"')
            assert not SECRETISH.search(name), f"{name} belongs in the EnvironmentFile"
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed (the unit is still checked statically)")
    # verify insists that ExecStart exists: point it at an executable that does.
    text = UNIT.read_text(encoding="utf-8").replace(
        "/opt/swarm-runtime/venv/bin/swarm-runtime", sys.executable
    )
    unit = tmp_path / UNIT.name
    unit.write_text(text, encoding="utf-8")
    proc = _run([tool, "verify", "--man=no", str(unit)], cwd=tmp_path)
    unusable = ("Failed to connect to bus", "not been booted with systemd", "Failed to initialize")
    if proc.returncode != 0 and any(marker in proc.stderr for marker in unusable):
        pytest.skip(f"systemd-analyze cannot run here: {proc.stderr.strip()}")
    # It reports unknown keys and bad values as warnings with exit 0: any output is a failure.
    assert proc.returncode == 0 and not proc.stderr.strip(), _output(proc)


# --- nginx --------------------------------------------------------------------------------

NginxBlock = list[tuple[str, list[str], "NginxBlock | None"]]


def _parse_nginx(text: str) -> NginxBlock:
    """Directives as (name, args, children-or-None); enough for this one file."""
    text = re.sub(r"#[^\n]*", "", text)
    tokens = re.findall(r"'[^']*'|\"[^\"]*\"|[{};]|[^\s{};]+", text)
    stack: list[NginxBlock] = [[]]
    words: list[str] = []
    for token in tokens:
        if token == ";":
            stack[-1].append((words[0], words[1:], None))
            words = []
        elif token == "{":
            children: NginxBlock = []
            stack[-1].append((words[0], words[1:], children))
            stack.append(children)
            words = []
        elif token == "}":
            assert not words, f"unterminated directive {words}"
            stack.pop()
        else:
            words.append(token)
    assert len(stack) == 1 and not words, "unbalanced braces"
    return stack[0]


def _find(block: NginxBlock, name: str) -> list[tuple[list[str], NginxBlock | None]]:
    return [(args, children) for n, args, children in block if n == name]


def _seconds(value: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600}
    return int(value[:-1]) * units[value[-1]] if value[-1] in units else int(value)


def test_nginx_site_static() -> None:
    conf = _parse_nginx(NGINX_SITE.read_text(encoding="utf-8"))
    maps = {tuple(args): body for args, body in _find(conf, "map")}
    assert ("$http_upgrade", "$connection_upgrade") in maps
    (upstream_args, upstream), *_ = _find(conf, "upstream")
    assert upstream is not None and [f"127.0.0.1:{PORT}"] in [
        a for a, _ in _find(upstream, "server")
    ]
    upstream_url = f"http://{upstream_args[0]}"

    servers = [body for _, body in _find(conf, "server") if body is not None]
    plain = [s for s in servers if any("443" not in a[0] for a, _ in _find(s, "listen"))]
    tls = [s for s in servers if any(a[:2] == ["443", "ssl"] for a, _ in _find(s, "listen"))]
    assert len(plain) == 1 and len(tls) == 1
    redirects = [
        args
        for _, loc in _find(plain[0], "location")
        if loc is not None
        for args, _ in _find(loc, "return")
    ]
    assert ["301", "https://$host$request_uri"] in redirects, "HTTP -> HTTPS"

    server = tls[0]
    assert _find(server, "ssl_certificate") and _find(server, "ssl_certificate_key")
    assert _find(server, "client_max_body_size") == [(["1m"], None)]

    locations = {" ".join(args): body for args, body in _find(server, "location")}
    proxied = {k: v for k, v in locations.items() if v is not None and _find(v, "proxy_pass")}
    assert {"= /ws", "/"} <= proxied.keys()
    for where, loc in proxied.items():
        assert _find(loc, "proxy_pass") == [([upstream_url], None)], where
        # proxy_set_header is not inherited once a location sets any: each must set all.
        headers = {args[0].lower(): args[1] for args, _ in _find(loc, "proxy_set_header")}
        assert headers.get("x-request-id", "").startswith("$"), f"{where}: X-Request-Id"
        assert headers.get("x-forwarded-proto") == "$scheme", where
        assert _find(loc, "proxy_http_version") == [(["1.1"], None)], where
        for timeout in ("proxy_read_timeout", "proxy_send_timeout"):
            assert _find(loc, timeout), f"{where}: {timeout}"

    ws = proxied["= /ws"]
    headers = {args[0].lower(): args[1] for args, _ in _find(ws, "proxy_set_header")}
    assert headers["upgrade"] == "$http_upgrade"
    assert headers["connection"] == "$connection_upgrade"
    assert _seconds(_find(ws, "proxy_read_timeout")[0][0][0]) >= 3600


def _nginx_binary() -> str | None:
    candidates = [os.environ.get("NGINX_BIN"), shutil.which("nginx"), "/usr/sbin/nginx"]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "runtime.example.com")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_nginx_t(tmp_path: Path) -> None:
    nginx = _nginx_binary()
    if nginx is None:
        pytest.skip("nginx is not installed (set NGINX_BIN to use one); checked statically")
    cert, key = _self_signed(tmp_path)
    site = NGINX_SITE.read_text(encoding="utf-8")
    site = re.sub(r"ssl_certificate\s+[^;]+;", f"ssl_certificate {cert};", site)
    site = re.sub(r"ssl_certificate_key\s+[^;]+;", f"ssl_certificate_key {key};", site)
    (tmp_path / "site.conf").write_text(site, encoding="utf-8")
    temp_paths = "\n".join(
        f"    {kind}_temp_path {tmp_path / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    main = tmp_path / "nginx.conf"
    main.write_text(
        f"pid {tmp_path / 'nginx.pid'};\nerror_log {tmp_path / 'error.log'};\nevents {{}}\n"
        f"http {{\n    access_log off;\n{temp_paths}\n    include {tmp_path / 'site.conf'};\n}}\n",
        encoding="utf-8",
    )
    proc = _run(
        [nginx, "-t", "-q", "-p", str(tmp_path), "-e", str(tmp_path / "error.log"), "-c", str(main)]
    )
    assert proc.returncode == 0, _output(proc)


# --- docs ---------------------------------------------------------------------------------


def test_readmes_cover_deploying_secrets_and_rollback() -> None:
    deploy = (DEPLOY / "README.md").read_text(encoding="utf-8")
    for needed in (
        *SECRET_ENV,
        "RUNTIME_WORKERS",
        "swarm-runtime backup",
        "swarm-runtime restore",
        "custom format",
        "docker compose",
        "kubernetes/README.md",
        "systemd",
        "nginx",
    ):
        assert needed in deploy, f"deploy/README.md: {needed}"
    k8s = (K8S / "README.md").read_text(encoding="utf-8")
    for needed in (
        "kubectl create secret generic swarm-runtime",
        "CloudNativePG",
        "migrate",
        "initContainer",
        "stateless",
    ):
        assert needed in k8s, f"deploy/kubernetes/README.md: {needed}"
    for key in SECRET_ENV:
        assert f"--from-literal={key}=" in k8s
