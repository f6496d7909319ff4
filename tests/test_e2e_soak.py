"""A small soak (``voxcart bench soak --short``) against the real stack: 30 calls (the greeting and a goodbye,
about 15 s each), 15 at a time, through the Twilio protocol, with the calls' key retention cut to 3 s. Every call
completes; each service's memory stays within a loose bound after warm-up (30 calls are too few for the 5 % of the
full soak); no Redis key lives without a TTL but the global ones designed to; and every call's own keys are gone
once its retention has passed."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from voxcart.cli.bench.soak import SoakOptions, run_soak
from voxcart.cli.bench.soak_probe import count_log_errors
from voxcart.cli.stack import Stack
from voxcart.common.settings import load_settings

pytestmark = pytest.mark.e2e

RETENTION_S = 3


def test_e2e_soak_small(stack_runner: Callable[..., AbstractContextManager[Stack]], tmp_path: Path) -> None:
    env = {"CALL_RETENTION_MS": str(RETENTION_S * 1000), "MAX_CALLS": "25", "RATE_LIMIT_CALLS": "0"}
    with stack_runner("soak", {"stt": 1, "brain": 1, "tts": 1}, env) as stack:
        options = SoakOptions(
            calls=30,
            concurrency=15,
            retention_s=RETENTION_S,
            gateway_url=stack.gateway_url,
            redis_url=stack.redis_url,
            json_path=str(tmp_path / "soak.json"),
            warmup_calls=10,
            max_growth_pct=20.0,
            sample_s=0.5,
            short=True,
        )
        report = run_soak(options, load_settings({}, env_file=None))
        assert stack.log_path is not None
        with open(stack.log_path, encoding="utf-8", errors="replace") as log:
            logged = count_log_errors(log)
    calls = report["calls"]
    assert calls["completed"] == 30 and calls["failed"] == 0, calls["failures"]
    assert calls["lines_answered"] == 30 and calls["greetings"] == 30 and calls["held_calls"] == 0
    processes = report["memory"]["processes"]
    assert {"gateway", "stt", "brain", "tts", "redis"} <= set(processes), "every service process was found"
    for svc in ("gateway", "stt", "brain", "tts"):
        assert processes[svc]["ok"], f"{svc}: {processes[svc]}"
    keys = report["keys"]
    assert [scan["at"] for scan in keys["scans"]] == ["end of warm-up", "half way", "end of calls", "after retention"]
    assert all(scan["without_ttl"] == [] for scan in keys["scans"]), keys["scans"]
    assert keys["leftover"]["count"] == 0, keys["leftover"]
    assert keys["leftover"]["gone_after_s"] is not None
    assert keys["leftover"]["gone_after_s"] <= RETENTION_S + 3
    assert all(held == 0 for held in keys["holding"].values()), keys["holding"]
    assert "vc:calls:lifecycle" in keys["globals"]
    assert report["errors"]["dead_letters"] == 0 and report["errors"]["protocol_errors"] == 0
    assert (logged.errors, logged.tracebacks) == (0, 0), logged.top
    assert report["verdict"] == {"ok": True, "reasons": []}
    assert json.loads((tmp_path / "soak.json").read_text())["verdict"]["ok"] is True
