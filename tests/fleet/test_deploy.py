"""The shipped runner image, compose service, Kubernetes Job and workflow, checked offline for
what they run and how the password reaches them (no Docker engine, cluster or runner is here)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

from tests.conftest import BIN, ROOT
from uaip_db.fleet import run
from uaip_db.fleet.targets import load

DOCKERFILE = ROOT / "Dockerfile"
JOB = ROOT / "deploy" / "kubernetes" / "fleet-upgrade-job.yaml"
WORKFLOW = ROOT / ".github" / "workflows" / "fleet.yml"
EXAMPLE_TARGETS = ROOT / "deploy" / "fleet-targets.toml"
SHA_PINNED = re.compile(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}")


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text(encoding="utf-8"))
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def test_the_runner_image_is_slim_python_non_root_inv_and_holds_no_credentials() -> None:
    steps = instructions(DOCKERFILE)
    (base,) = [rest for keyword, rest in steps if keyword == "FROM"]
    assert re.fullmatch(r"python:3\.1[1-9]-slim(-\w+)?", base), base
    users = [rest for keyword, rest in steps if keyword == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert [json.loads(rest) for keyword, rest in steps if keyword == "ENTRYPOINT"] == [["inv"]]
    runs = " ".join(rest for keyword, rest in steps if keyword == "RUN")
    # PostgreSQL 16's programs come from the pinned build, with the libraries it links
    # (tests/docker/ builds the image and runs them).
    assert "find_binaries(16)" in runs and "libxml2" in runs and "pip install ." in runs
    copied = " ".join(rest for keyword, rest in steps if keyword in ("COPY", "ADD"))
    assert ".env" not in copied and "migrations/" in copied and "tasks.py" in copied
    for keyword, rest in steps:
        if keyword in ("ENV", "ARG"):
            assert not re.search(r"PASSWORD|DATABASE_URL|SECRET", rest, re.IGNORECASE), rest
    # The image runs tasks from /app, the checkout the migrations are read from.
    assert "UAIP_DB_ROOT=/app" in " ".join(rest for keyword, rest in steps if keyword == "ENV")
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".env" in ignored


def test_the_compose_migrations_service_upgrades_uaip_db_after_its_healthcheck() -> None:
    compose = shutil.which("docker-compose")
    if compose is None:
        pytest.fail("docker-compose is not installed; .ci/run installs it")
    result = subprocess.run(
        [compose, "-f", str(ROOT / "docker-compose.yml"), "config"],
        env={"PATH": "/usr/bin:/bin", "DB_PASSWORD": "from-env", "DB_NAME": "n"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    migrations = services["migrations"]
    assert Path(migrations["build"]["context"]).resolve() == ROOT
    assert migrations["command"] == ["db.upgrade"]
    assert migrations["depends_on"] == {"uaip-db": {"condition": "service_healthy"}}
    assert "healthcheck" in services["uaip-db"]
    environment = migrations["environment"]
    assert environment["DB_HOST"] == "uaip-db" and str(environment["DB_PORT"]) == "5432"
    assert environment["DB_PASSWORD"] == "from-env"  # from the caller, like uaip-db's own
    assert environment["DB_NAME"] == services["uaip-db"]["environment"]["POSTGRES_DB"] == "n"


def job() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(JOB.read_text(encoding="utf-8"))
    return loaded


def test_the_job_gives_each_pod_its_shard_and_the_password_from_a_secret() -> None:
    manifest = job()
    spec = manifest["spec"]
    assert manifest["kind"] == "Job" and spec["completionMode"] == "Indexed"
    (container,) = spec["template"]["spec"]["containers"]
    command = " ".join([*container["command"], *container["args"]])
    assert "inv fleet.upgrade" in command
    shard = re.search(r'--shard "?\$\{JOB_COMPLETION_INDEX\}/(\d+)"?', command)
    assert shard and int(shard[1]) == spec["completions"]
    targets = re.search(r"--targets (\S+)", command)
    assert targets is not None
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["template"]["spec"]["volumes"]}
    assert str(Path(targets[1]).parent) == mounts["targets"]
    assert "configMap" in volumes["targets"]
    environment = {item["name"]: item for item in container["env"]}
    for name, item in environment.items():
        if "PASSWORD" in name:
            assert "value" not in item
            assert set(item["valueFrom"]) == {"secretKeyRef"}
    # The variable the targets file names is the one the Secret fills.
    wanted = {target.password_env for target in load(EXAMPLE_TARGETS).targets}
    assert wanted <= {
        name for name, item in environment.items() if "secretKeyRef" in item.get("valueFrom", {})
    }
    assert spec["template"]["spec"]["securityContext"]["runAsNonRoot"] is True


def test_the_job_is_a_valid_kubernetes_resource() -> None:
    validate = BIN / "kubernetes-validate"  # in the dev extras; it ships the schemas
    result = subprocess.run(
        [str(validate), "--strict", str(JOB)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def workflow() -> dict[Any, Any]:
    loaded: dict[Any, Any] = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))
    return loaded


def test_the_workflow_runs_one_shard_per_matrix_job_then_merges() -> None:
    flow = workflow()
    assert flow["permissions"] == {"contents": "read"}
    shards = int(flow["env"]["FLEET_SHARDS"])
    upgrade = flow["jobs"]["upgrade"]
    assert upgrade["strategy"]["matrix"]["shard"] == list(range(shards))
    assert upgrade["strategy"]["fail-fast"] is False
    (step,) = [s for s in upgrade["steps"] if "fleet.upgrade" in s.get("run", "")]
    assert '--shard "$SHARD/$FLEET_SHARDS"' in step["run"] and "--json" in step["run"]
    assert step["env"]["SHARD"] == "${{ matrix.shard }}"
    assert step["env"]["FLEET_DB_PASSWORD"] == "${{ secrets.FLEET_DB_PASSWORD }}"
    assert "${{" not in step["run"]  # values reach the shell through the environment only
    report = flow["jobs"]["report"]
    assert report["needs"] == "upgrade"
    assert any("inv fleet.report" in s.get("run", "") for s in report["steps"])
    # The workflow's targets file loads, and its shards cover it exactly once.
    path = ROOT / flow["env"]["FLEET_TARGETS"]
    names = [t.name for t in load(path).targets]
    seen = [
        target.name
        for index in range(shards)
        for target in run.load_fleet(
            path, f"{index}/{shards}", environ={"FLEET_DB_PASSWORD": "x"}
        ).targets
    ]
    assert sorted(seen) == sorted(names)


def test_the_workflow_pins_actions_and_keeps_no_credentials_on_disk() -> None:
    for name, body in workflow()["jobs"].items():
        for step in body["steps"]:
            if "uses" not in step:
                continue
            assert SHA_PINNED.fullmatch(step["uses"]), f"{name}: {step['uses']} is not SHA-pinned"
            if step["uses"].startswith("actions/checkout@"):
                assert step["with"]["persist-credentials"] is False
