"""The Grafana dashboard against the metrics the services really export, and a real Prometheus scraping the stack.

Invariants checked:
- Every panel's PromQL names only metrics some service exports (in-process registry, then each running
  service's ``/metrics``), and queries the provisioned datasource.
- No voxcart metric has a label outside a small, bounded set (never a CallSid).
- Every service exports the process collector's CPU and memory (the per-service CPU and memory panels).
- After one simulated call, a real Prometheus (``prometheus`` on PATH: ``scripts/prometheus.sh`` installs Debian's)
  scraping the four services returns data for every dashboard query.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import math
import re
import shutil
import subprocess
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY, Metric
from prometheus_client.parser import text_string_to_metric_families

from voxcart.cli.calling import DEV_AUTH_TOKEN
from voxcart.cli.simulator import Line, Overlap, SimulatorConfig, simulate_call
from voxcart.cli.stack import Stack
from voxcart.common.localredis import free_port

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "observability" / "grafana" / "dashboards" / "voxcart.json"
SERVICES = ("gateway", "stt", "brain", "tts")
METRIC_MODULES = (
    "voxcart.gateway.app",
    "voxcart.gateway.twilio.rest",
    "voxcart.stt.worker",
    "voxcart.stt.fallback",
    "voxcart.stt.deepgram",
    "voxcart.brain.worker",
    "voxcart.brain.llm",
    "voxcart.brain.dialog",
    "voxcart.tts.worker",
    "voxcart.tts.voice",
    "voxcart.tts.phrase_cache",
    "voxcart.tts.elevenlabs",
)
"""Modules that define the services' metrics at import."""
ALLOWED_LABELS = {"svc", "reason", "scope", "event", "provider", "voice", "result", "outcome", "stream", "decision"}
"""Every label a voxcart metric may carry: each has a small, fixed set of values."""
RATE_INTERVAL = "1m"
"""What Grafana's ``$__rate_interval`` becomes when the test asks Prometheus directly."""

_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"(?<![\w.])[A-Za-z_:][A-Za-z0-9_:]*")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (not functions, keywords, labels or label values)."""
    bare = _GROUPING.sub("", _RANGE.sub("", _MATCHERS.sub("", _STRING.sub('""', expr))))
    names: set[str] = set()
    for match in _IDENT.finditer(bare):
        if bare[match.end() :].lstrip().startswith("(") or match.group().lower() in _KEYWORDS:
            continue
        names.add(match.group())
    return names


def sample_names(families: Iterable[Metric]) -> set[str]:
    """Every series name the families can expose, samples or not (a labelled metric has none until used)."""
    names: set[str] = set()
    for family in families:
        names.add(family.name)
        names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ()))
        names.update(sample.name for sample in family.samples)
    return names


def load_dashboard() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return dashboard


def queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """``(panel title, expr)`` of every target of every panel."""
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            yield panel["title"], target["expr"]


def in_process_names() -> set[str]:
    for module in METRIC_MODULES:
        importlib.import_module(module)
    return sample_names(REGISTRY.collect())


# -- without a stack ----------------------------------------------------------------------------------------
def test_metric_names_reads_selectors_only() -> None:
    expr = (
        "histogram_quantile(0.95, sum by (le, svc) "
        '(rate(a_seconds_bucket{result="fenced", x=~"b_c"}[$__rate_interval])))'
        " or vector(0) + on (job) process_resident_memory_bytes"
    )
    assert metric_names(expr) == {"a_seconds_bucket", "process_resident_memory_bytes"}


def test_dashboard_is_a_provisionable_grafana_model() -> None:
    dashboard = load_dashboard()
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    titles = [panel["title"] for panel in dashboard["panels"]]
    assert len(titles) == len(set(titles)), f"duplicate panel titles: {titles}"
    for panel in dashboard["panels"]:
        where = f"panel {panel['title']!r}"
        assert panel["datasource"] == {"type": "prometheus", "uid": "prometheus"}, where
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"} and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        assert panel["targets"], f"{where} has no query"
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), f"{where}: duplicate refIds {ref_ids}"
    for needed in ("calls", "turn latency", "breakdown", "barge-in", "bus lag", "errors", "fallbacks", "cpu", "memory"):
        assert any(needed in title.lower() for title in titles), f"no panel for {needed!r}: {titles}"
    latency = next(p for p in dashboard["panels"] if p["title"].lower().startswith("turn latency (voice"))
    assert {t["legendFormat"] for t in latency["targets"]} == {"p50", "p95", "p99"}


def test_every_dashboard_query_names_exported_metrics() -> None:
    exported = in_process_names()
    for title, expr in queries(load_dashboard()):
        names = metric_names(expr)
        assert names, f"panel {title!r}: no metric in {expr!r}"
        unknown = names - exported
        assert not unknown, f"panel {title!r} queries metrics no service exports: {sorted(unknown)}"


def test_voxcart_metrics_have_bounded_labels() -> None:
    in_process_names()
    checked = 0
    for collector in list(REGISTRY._collector_to_names):
        names = REGISTRY._collector_to_names.get(collector, [])
        if not any(name.startswith("voxcart_") for name in names):
            continue
        labels = set(getattr(collector, "_labelnames", ()))
        assert labels <= ALLOWED_LABELS, f"{names[0]} has unbounded labels {sorted(labels - ALLOWED_LABELS)}"
        checked += 1
    assert checked >= 25, f"only {checked} voxcart metrics registered: an import is missing"


# -- the real stack and a real Prometheus -------------------------------------------------------------------
def prometheus_config(targets: dict[str, list[str]]) -> str:
    """A Prometheus config scraping every target each second, one job per service (as in compose)."""
    jobs = [
        {"job_name": svc, "static_configs": [{"targets": targets[svc]}], "scrape_interval": "1s"} for svc in SERVICES
    ]
    return json.dumps({"global": {"scrape_interval": "1s", "evaluation_interval": "1s"}, "scrape_configs": jobs})


async def wait_for(what: str, check: Any, timeout: float) -> Any:
    """Poll the coroutine function ``check`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = await check()
        except httpx.HTTPError as exc:
            last = exc
        if last and not isinstance(last, Exception):
            return last
        await asyncio.sleep(0.25)
    raise AssertionError(f"{what} within {timeout:.0f} s (last: {last!r})")


async def scrape(http: httpx.AsyncClient, target: str) -> list[Metric]:
    response = await http.get(f"http://{target}/metrics")
    response.raise_for_status()
    return list(text_string_to_metric_families(response.text))


async def place_call(stack: Stack) -> None:
    """One call: a question, an interruption of the answer (barge-in), then the caller hangs up."""
    from voxcart.cli.caller_voice import synthesize_caller

    def voice(text: str) -> bytes:
        return synthesize_caller(text, lead_ms=200, tail_ms=100)

    question = await asyncio.to_thread(voice, "what is your return policy")
    interruption = await asyncio.to_thread(voice, "what are your opening hours")
    items: list[Line | Overlap] = [
        Line(question, "what is your return policy"),
        Overlap(interruption, "interruption", 1500.0, "hours"),
    ]
    config = SimulatorConfig(gateway_url=stack.gateway_url, auth_token=DEV_AUTH_TOKEN, from_number="+15550007000")
    result = await simulate_call(config, items)
    assert any(t.latency_s is not None for t in result.turns), "the call got no spoken reply"


@pytest.mark.e2e
async def test_prometheus_returns_data_for_every_dashboard_query(stack: Stack, tmp_path: Path) -> None:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus is not on PATH: run scripts/prometheus.sh (Debian's prometheus package)")
    targets = stack.metrics_targets()
    assert set(targets) == set(SERVICES), targets
    dashboard = load_dashboard()
    async with httpx.AsyncClient(timeout=5.0) as http:
        exported: set[str] = set()
        for svc in SERVICES:
            for target in targets[svc]:
                # a replica another test just spawned may still be starting
                families = await wait_for(f"{svc}'s /metrics at {target}", lambda t=target: scrape(http, t), 30.0)
                names = sample_names(families)
                for process_metric in ("process_cpu_seconds_total", "process_resident_memory_bytes"):
                    assert process_metric in names, f"{svc} at {target} does not export {process_metric}"
                exported |= names
        for title, expr in queries(dashboard):
            unknown = metric_names(expr) - exported
            assert not unknown, f"panel {title!r}: the running services do not export {sorted(unknown)}"

        config = tmp_path / "prometheus.yml"
        config.write_text(prometheus_config(targets))
        port = free_port()
        api = f"http://127.0.0.1:{port}"
        log = tmp_path / "prometheus.log"
        with log.open("wb") as out:
            server = subprocess.Popen(
                [
                    binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={tmp_path / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--log.level=warn",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:

            async def all_up() -> bool:
                if server.poll() is not None:
                    raise AssertionError(f"prometheus exited ({server.returncode}): {log.read_text()[-2000:]}")
                active = (await http.get(f"{api}/api/v1/targets")).json()["data"]["activeTargets"]
                return len(active) == sum(map(len, targets.values())) and all(t["health"] == "up" for t in active)

            await wait_for("prometheus scraping every service", all_up, 30.0)
            await place_call(stack)
            await asyncio.sleep(2.5)  # two more scrapes after the call's last observations

            async def query(expr: str) -> list[dict[str, Any]]:
                promql = expr.replace("$__rate_interval", RATE_INTERVAL)
                body = (await http.get(f"{api}/api/v1/query", params={"query": promql})).json()
                assert body["status"] == "success", f"{promql!r}: {body}"
                result: list[dict[str, Any]] = body["data"]["result"]
                return result

            results: dict[str, list[dict[str, Any]]] = {}
            for title, expr in queries(dashboard):
                results[expr] = await wait_for(f"panel {title!r}: data for {expr!r}", lambda e=expr: query(e), 10.0)
        finally:
            server.terminate()
            server.wait(10)

    def values(expr: str) -> list[float]:
        return [float(series["value"][1]) for series in results[expr]]

    panels = {p["title"]: {t["legendFormat"]: t["expr"] for t in p["targets"]} for p in dashboard["panels"]}
    turn_p50 = values(panels["Turn latency (voice to voice)"]["p50"])
    assert turn_p50 and all(math.isfinite(v) and v > 0 for v in turn_p50), f"turn latency p50: {turn_p50}"
    assert max(values(panels["WebSocket frames"]["out {{event}}"])) > 0, "no websocket frame out in the last minute"
    for stage, expr in panels["Turn latency breakdown (p95)"].items():
        assert all(math.isfinite(v) for v in values(expr)), f"turn stage {stage!r} observed nothing: {values(expr)}"
    barge_in = panels["Barge-in reaction"]
    assert any(math.isfinite(v) for key in ("pause p50", "clear p50") for v in values(barge_in[key])), (
        "the interruption was not measured"
    )
    for title in ("CPU per service", "Memory per service"):
        jobs = {series["metric"]["job"] for series in results[panels[title]["{{job}}"]]}
        assert jobs == set(SERVICES), f"{title} covers {sorted(jobs)}"
    consumed = {("stt", "audio.in"), ("brain", "events"), ("tts", "tts"), ("gateway", "audio.out")}
    consumed |= {(svc, "lifecycle") for svc in ("stt", "brain", "tts")}
    lag = {
        (s["metric"]["svc"], s["metric"]["stream"]): float(s["value"][1])
        for s in results[panels["Bus lag per stream (p95)"]["{{svc}} {{stream}}"]]
    }
    for pair in sorted(consumed):
        assert math.isfinite(lag.get(pair, math.nan)) and lag[pair] >= 0, f"bus lag of {pair} not measured: {lag}"
    backlog = panels["Bus backlog per stream"]
    waiting = {(s["metric"]["svc"], s["metric"]["stream"]) for s in results[backlog["{{svc}} {{stream}}"]]}
    assert consumed - waiting == {(svc, "lifecycle") for svc in ("stt", "brain", "tts")}, f"backlog series: {waiting}"
    groups = {s["metric"]["svc"] for s in results[backlog["{{svc}} lifecycle"]]}
    assert groups == {"stt", "brain", "tts"}, f"lifecycle backlog of {groups}"
    providers = {s["metric"]["provider"] for s in results[panels["Provider requests"]["{{provider}} {{result}}"]]}
    assert {"llm", "twilio"} <= providers, f"provider request series: {providers}"
