"""``voxcart bench soak``: key families and the TTL audit, memory growth after warm-up, the per-call summary, the
verdict, the report and the command line on made-up data; the Redis probe against a real Redis."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from voxcart.cli.bench.soak import (
    GOODBYES,
    QUESTIONS,
    CallPlan,
    SoakOptions,
    SoakTarget,
    build_report,
    plan_call,
    summarize_call,
)
from voxcart.cli.bench.soak_measure import (
    GLOBAL_NO_TTL,
    KeyInfo,
    MemorySample,
    classify_key,
    family_summary,
    leftover_keys,
    memory_growth,
    percentiles,
    verdict,
    without_ttl,
)
from voxcart.cli.bench.soak_probe import (
    count_log_errors,
    cpu_seconds,
    global_sizes,
    host_cpu,
    open_redis,
    read_rss_kib,
    scan_keys,
    still_held,
    without_ttl_confirmed,
)
from voxcart.cli.bench.soak_report import render
from voxcart.cli.main import build_parser, main
from voxcart.cli.simulator import CallResult, TurnResult
from voxcart.common.bus import RedisBus, keys

SID = "CA" + "1" * 32
OTHER = "CA" + "2" * 32


# -- keys ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "family", "sid", "per_call"),
    [
        (keys.audio_in(SID), "call:audio.in", SID, True),
        (keys.meta(SID), "call:meta", SID, True),
        (keys.checkpoint("brain", SID), "ckpt:brain", SID, True),
        (keys.lease("stt", SID), "lease:stt", SID, True),
        (keys.dedupe("ended", SID), "dedupe:ended", SID, False),
        (keys.dedupe("twilio", "5f0c-uuid"), "dedupe:twilio", None, False),
        (keys.LIFECYCLE, "global", None, False),
        (keys.ADMISSION_QUEUE, "global", None, False),
        (keys.rate_limit("abc123"), "ratelimit", None, False),
        (keys.capacity("tts"), "capacity", None, False),
        ("vc:something:new", "other", None, False),
        ("not-voxcart", "other", None, False),
    ],
)
def test_cli_bench_soak_classify_key(name: str, family: str, sid: str | None, per_call: bool) -> None:
    cls = classify_key(name)
    assert (cls.family, cls.sid, cls.per_call) == (family, sid, per_call)


def test_cli_bench_soak_every_per_call_key_is_a_call_key() -> None:
    names = keys.per_call_keys(SID) + [keys.lease(svc, SID) for svc in ("stt", "brain", "tts")]
    assert all(classify_key(n).per_call and classify_key(n).sid == SID for n in names)


def test_cli_bench_soak_without_ttl_spares_only_the_designed_globals() -> None:
    found = [
        KeyInfo(keys.LIFECYCLE, "stream", -1),
        KeyInfo(keys.workers("stt"), "zset", -1),
        KeyInfo(keys.meta(SID), "hash", -1),  # a call's key with no TTL: the bug the soak looks for
        KeyInfo(keys.audio_in(SID), "stream", 5000),
        KeyInfo("vc:new:global", "string", -1),
    ]
    assert [k.name for k in without_ttl(found)] == [keys.meta(SID), "vc:new:global"]
    assert all(name.startswith("vc:") for name in GLOBAL_NO_TTL)


def test_cli_bench_soak_leftover_keys_are_the_calls_own() -> None:
    found = [
        KeyInfo(keys.events(SID), "stream", 4000),
        KeyInfo(keys.checkpoint("tts", SID), "hash", 4000),
        KeyInfo(keys.events(OTHER), "stream", 4000),  # not one of the soak's calls
        KeyInfo(keys.dedupe("ended", SID), "string", 7_000_000),  # kept for its own retention
        KeyInfo(keys.CALLS_INDEX, "zset", -1),
    ]
    left = leftover_keys(found, [SID])
    assert [k.name for k in left] == [keys.events(SID), keys.checkpoint("tts", SID)]
    assert leftover_keys(found, []) == []


def test_cli_bench_soak_family_summary() -> None:
    found = [
        KeyInfo(keys.dedupe("twilio", "a"), "string", 86_000_000, 72),
        KeyInfo(keys.dedupe("twilio", "b"), "string", 86_400_000, 72),
        KeyInfo(keys.LIFECYCLE, "stream", -1, 6000),
    ]
    summary = family_summary(found)
    assert summary["dedupe:twilio"] == {"keys": 2, "no_ttl": 0, "max_ttl_s": 86400.0, "bytes": 144}
    assert summary[keys.LIFECYCLE] == {"keys": 1, "no_ttl": 1, "max_ttl_s": None, "bytes": 6000}


# -- memory -------------------------------------------------------------------------------------------------------


def series(values: list[int], per_sample: int = 10) -> list[MemorySample]:
    return [MemorySample(float(i), i * per_sample, {"svc": v}) for i, v in enumerate(values)]


def test_cli_bench_soak_memory_flat_after_warmup_passes() -> None:
    # warms up from 100 to 150 MiB over the first 100 calls, then stays within 1 MiB
    kib = [100 * 1024, 130 * 1024, 150 * 1024] + [150 * 1024 + (i % 3) * 512 for i in range(97)]
    growth = memory_growth(series(kib), warmup_calls=20, bound_pct=5.0)["svc"]
    assert growth["warmup_mib"] == 150.0 and growth["end_mib"] == 151.0 and growth["start_mib"] == 100.0
    assert growth["growth_pct"] == pytest.approx(0.67, abs=0.01) and growth["ok"] is True
    assert abs(growth["slope_mib_per_100_calls"] or 0) < 0.1


def test_cli_bench_soak_memory_leak_fails_with_its_slope() -> None:
    # 100 MiB at warm-up, then 64 KiB more per call completed: 10 calls per sample, 90 samples after warm-up
    kib = [100 * 1024] * 3 + [100 * 1024 + 64 * 10 * i for i in range(1, 91)]
    growth = memory_growth(series(kib), warmup_calls=20, bound_pct=5.0)["svc"]
    assert growth["growth_pct"] == pytest.approx(56.25, abs=0.01) and growth["ok"] is False
    assert growth["slope_mib_per_100_calls"] == pytest.approx(6.25, abs=0.001)  # 64 KiB x 100 calls


def test_cli_bench_soak_memory_without_samples_after_warmup_fails() -> None:
    growth = memory_growth(series([100, 100]), warmup_calls=50, bound_pct=5.0)["svc"]
    assert growth["growth_pct"] is None and growth["ok"] is False and growth["end_mib"] is None


def test_cli_bench_soak_memory_process_gone_is_absent_not_zero() -> None:
    samples = [MemorySample(0, 0, {"a": 1024, "b": 2048}), MemorySample(1, 10, {"a": 1024})]
    growth = memory_growth(samples, warmup_calls=5, bound_pct=5.0)
    assert growth["a"]["ok"] is True and growth["b"]["growth_pct"] is None and growth["b"]["ok"] is False


def test_cli_bench_soak_percentiles() -> None:
    p = percentiles([float(x) for x in range(1, 101)])
    assert p == {"n": 100, "p50": 50.0, "p95": 95.0, "p99": 99.0, "max": 100.0}
    assert percentiles([]) == {"n": 0}
    assert percentiles([float("nan"), 2.0])["n"] == 1


def test_cli_bench_soak_read_cpu(tmp_path: Path) -> None:
    (tmp_path / "42").mkdir()
    stat = "42 (python -m voxcart) S 1 42 42 0 -1 4194304 100 0 0 0 250 150 0 0 20 0 3 0 100 1000 50"
    (tmp_path / "42" / "stat").write_text(stat)
    (tmp_path / "stat").write_text("cpu  1000 0 500 8000 500 0 0 0 0 0\ncpu0 1 2 3 4\n")
    ticks = os.sysconf("SC_CLK_TCK")
    assert cpu_seconds(42, tmp_path) == pytest.approx(400 / ticks), "utime + stime, comm with spaces skipped"
    assert cpu_seconds(43, tmp_path) is None
    assert host_cpu(tmp_path) == pytest.approx((1500 / ticks, 10_000 / ticks))
    assert (cpu_seconds(os.getpid()) or 0) > 0


def test_cli_bench_soak_read_rss(tmp_path: Path) -> None:
    (tmp_path / "42").mkdir()
    (tmp_path / "42" / "status").write_text("Name:\tpython\nVmPeak:\t 999 kB\nVmRSS:\t  123456 kB\nThreads: 3\n")
    (tmp_path / "43").mkdir()
    (tmp_path / "43" / "status").write_text("Name:\tzombie\nState:\tZ (zombie)\n")
    assert read_rss_kib(42, tmp_path) == 123456
    assert read_rss_kib(43, tmp_path) is None and read_rss_kib(44, tmp_path) is None
    assert (read_rss_kib(os.getpid()) or 0) > 10_000  # this test process, for real


# -- calls --------------------------------------------------------------------------------------------------------


def test_cli_bench_soak_plans_vary_numbers_and_lines() -> None:
    plans = [plan_call(k, block=7) for k in range(1000)]
    assert len({p.from_number for p in plans}) == 1000, "every call has its own number (no rate limit applies)"
    assert all(p.from_number.startswith("+1555007") and len(p.from_number) == 12 for p in plans)
    assert {p.lines[0] for p in plans} == set(QUESTIONS) and {p.lines[1] for p in plans} == set(GOODBYES)
    assert len({p.lines for p in plans}) == len(QUESTIONS) * len(GOODBYES)
    short = [plan_call(k, short=True) for k in range(20)]
    assert all(len(p.lines) == 1 for p in short) and {p.lines[0] for p in short} == set(GOODBYES)


def answered_call(**extra: Any) -> CallResult:
    result = CallResult(call_sid=SID, stream_sids=["MZ1"], ended_by="agent", duration_s=26.0)
    result.turns = [
        TurnResult(0, "greeting", latency_s=0.03),
        TurnResult(1, "speech", caller="what are your opening hours", latency_s=0.6),
        TurnResult(2, "speech", caller="thank you goodbye", latency_s=0.7),
    ]
    for name, value in extra.items():
        setattr(result, name, value)
    return result


PLAN = CallPlan(3, "+15550000003", ("what are your opening hours", "thank you goodbye"))


def test_cli_bench_soak_summarize_a_completed_call() -> None:
    s = summarize_call(PLAN, answered_call(), 12.5)
    assert s["ok"] is True and s["problem"] is None and s["answered"] == 2 and s["greeted"] is True
    assert s["latencies_s"] == [0.6, 0.7] and s["greeting_s"] == 0.03 and s["ended_s"] == 12.5
    assert "audio" not in json.dumps(s), "no audio kept per call"


def test_cli_bench_soak_summarize_failures_say_why() -> None:
    late = answered_call()
    late.turns[2].timed_out, late.turns[2].latency_s = True, None
    assert "no reply in time to 'thank you goodbye'" in summarize_call(PLAN, late, 1)["problem"]
    short = answered_call()
    short.turns = short.turns[:2]
    assert "ended by the agent after 1 of 2 lines" in summarize_call(PLAN, short, 1)["problem"]
    held = answered_call(stream_sids=[], ended_by="no_stream", said=["All our lines are busy."], holds=3)
    problem = summarize_call(PLAN, held, 1)["problem"]
    assert "never connected" in problem and "lines are busy" in problem
    warned = summarize_call(PLAN, answered_call(errors=["31951 bad message"]), 1)
    assert warned["ok"] is False and warned["problem"] == "31951 bad message"
    broken = summarize_call(PLAN, "call 3 failed: POST answered HTTP 500", 1)
    assert broken == {"index": 3, "sid": None, "ok": False, "problem": "call 3 failed: POST answered HTTP 500",
                      "ended_s": 1}  # fmt: skip


# -- the report and the verdict -----------------------------------------------------------------------------------


def observed(calls: list[dict[str, Any]], rss_end: int = 101 * 1024, **extra: Any) -> dict[str, Any]:
    samples = [MemorySample(0, 0, {"gateway": 100 * 1024, "redis": 10 * 1024})]
    samples += [MemorySample(float(i), i, {"gateway": 100 * 1024, "redis": 10 * 1024}) for i in (1, 2)]
    samples += [MemorySample(float(i), i, {"gateway": rss_end, "redis": 30 * 1024}) for i in (3, 4)]
    base: dict[str, Any] = {
        "calls_s": 60.0,
        "calls": calls,
        "samples": samples,
        "scans": [{"at": "end of warm-up", "keys": 40, "without_ttl": []}],
        "leftover": {"count": 0, "calls": 0, "examples": [], "gone_after_s": 5.1},
        "holding": {keys.ACTIVE_CALLS: 0, keys.ADMISSION_QUEUE: 0},
        "index_held": len(calls),
        "families": {"dedupe:twilio": {"keys": 4, "no_ttl": 0, "max_ttl_s": 86400.0, "bytes": 288}},
        "globals": {
            keys.LIFECYCLE: {"type": "stream", "length": 8, "bytes": 900, "ttl_s": -1, "why": "w"},
            "vc:dlq:brain": {"type": "stream", "length": 0, "bytes": 100, "ttl_s": -1, "why": "w"},
        },
        "cpu": {"cores": {"gateway": 0.25, "redis": 0.1, "caller": None}, "host_busy_cores": 1.5, "host_cores": 2.0,
                "others_cores": 1.15},
        "redis": {"start": {"used_mib": 1.0, "rss_mib": 9.0, "keys": 9}, "end": {"used_mib": 2.0, "rss_mib": 11.0,
                                                                                 "keys": 20}},
    }  # fmt: skip
    base.update(extra)
    return base


def report_of(obs: dict[str, Any], calls: int = 4) -> dict[str, Any]:
    options = SoakOptions(calls=calls, concurrency=2, warmup_calls=2)
    target = SoakTarget("http://127.0.0.1:1", "redis://127.0.0.1:2/0", {"gateway": 11, "redis": 12}, 5.0, False)
    return build_report(options, target, obs, (0.5, 0.4, 0.3), 70.0)


GOOD = [summarize_call(PLAN, answered_call(), float(i)) for i in range(4)]


def test_cli_bench_soak_report_passes_and_renders() -> None:
    report = report_of(observed(GOOD))
    assert report["verdict"] == {"ok": True, "reasons": []}
    assert report["calls"]["completed"] == 4 and report["calls"]["lines_answered"] == 8
    assert report["memory"]["processes"]["gateway"]["growth_pct"] == pytest.approx(1.0)
    assert report["memory"]["processes"]["redis"]["growth_pct"] == 200.0, "redis is reported..."
    assert report["findings"] and "vc:calls:index" in report["findings"][0]
    json.dumps(report)  # what --json writes
    text = render(report)
    assert "4 completed, 0 failed of 4" in text and "verdict: PASS" in text
    assert re.search(r"gateway \[11\] +0\.25 +100\.0", text) and "(not bounded)" in text, "...but not bounded"
    assert "machine busy 1.50 of 2.00 cores during the calls, 1.15 of them by other processes" in text
    assert "every call's own keys gone after retention (5.1 s" in text
    assert f"{keys.LIFECYCLE} (stream, 8 entries" in text
    assert "service log not read (stack not started here)" in text
    lost = "stt WARNING voxcart.common.ownership: lost the lease of a call"
    report["errors"]["log"] = {"path": "x.log", "errors": 1, "warnings": 3, "tracebacks": 1, "top": {lost: 3}}
    text = render(report)
    assert "service log: 1 error(s), 1 traceback(s), 3 warning(s)" in text
    assert "     3 x stt WARNING voxcart.common.ownership: lost the lease of a call" in text


def test_cli_bench_soak_verdict_names_every_broken_bound() -> None:
    failed = [*GOOD[:3], summarize_call(PLAN, "call 3 failed: boom", 9.0)]
    bad_scan = {"at": "half way", "keys": 50, "without_ttl": [{"name": keys.meta(SID), "type": "hash"}]}
    obs = observed(
        failed,
        rss_end=110 * 1024,
        scans=[bad_scan],
        leftover={"count": 2, "calls": 1, "examples": [{"name": keys.events(SID), "ttl_s": 7100.0}],
                  "gone_after_s": None},
        holding={keys.ACTIVE_CALLS: 1},
    )  # fmt: skip
    report = report_of(obs)
    ok, reasons = report["verdict"]["ok"], report["verdict"]["reasons"]
    assert ok is False
    assert reasons == [
        "1 of 4 calls failed",
        "gateway: memory grew +10.0 % after warm-up (bound 5 %)",
        f"1 key(s) without a TTL at half way: {keys.meta(SID)}",
        "2 key(s) of 1 call(s) left after their retention",
        f"{keys.ACTIVE_CALLS} still holds 1 ended call(s)",
    ]
    text = render(report)
    assert "FAILED call 3 (-): call 3 failed: boom" in text and "verdict: FAIL" in text
    assert "LEFT after retention: 2 key(s) of 1 call(s)" in text and "(TTL 7100 s)" in text
    assert verdict(report) == (False, reasons)


def test_cli_bench_soak_verdict_fails_when_calls_did_not_all_run() -> None:
    report = report_of(observed(GOOD[:3]))
    assert "only 3 of 4 calls ran" in report["verdict"]["reasons"]


def test_cli_bench_soak_log_errors_text_and_json() -> None:
    lines = [
        "2026-11-20 10:00:00,001 stt INFO voxcart.stt.app: started",
        "2026-11-20 10:00:01,002 brain ERROR voxcart.brain.app: store failed",
        "Traceback (most recent call last):",
        '  File "x.py", line 1, in <module>',
        "2026-11-20 10:00:02,003 stt WARNING voxcart.common.ownership: lost the lease of a call",
        "2026-11-20 10:00:02,004 stt WARNING voxcart.common.ownership: lost the lease of a call",
        '{"ts": 1.0, "level": "error", "logger": "voxcart.gateway.calls", "msg": "delivering failed", "exc": "..."}',
        '{"ts": 1.0, "level": "info", "logger": "voxcart.gateway.app", "msg": "an ERROR-ish word"}',
        "2026-11-20 10:00:03,005 tts INFO voxcart.tts: an ERROR-ish word in a message",
        "INFO:     connection open",
    ]
    found = count_log_errors(lines)
    assert (found.errors, found.warnings, found.tracebacks) == (2, 2, 2)
    assert found.top == {
        "stt WARNING voxcart.common.ownership: lost the lease of a call": 2,
        "brain ERROR voxcart.brain.app: store failed": 1,
        "ERROR voxcart.gateway.calls: delivering failed": 1,
    }


# -- options and the command line ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"calls": 1}, "--calls must be 2..100000"),
        ({"concurrency": 0}, "--concurrency must be 1..500"),
        ({"retention_s": 0.5}, "--retention must be 1..7200"),
        ({"calls": 10, "warmup_calls": 10}, "--warmup must be 1..9"),
        ({"max_growth_pct": 0}, "--max-growth"),
        ({"gateway_url": "http://gw:8080"}, "--gateway-url needs --redis-url"),
    ],
)
def test_cli_bench_soak_options_refuse_bad_values(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SoakOptions(**kwargs)


def test_cli_bench_soak_options_defaults() -> None:
    options = SoakOptions()
    assert (options.calls, options.concurrency, options.warmup, options.max_growth_pct) == (1000, 50, 100, 5.0)
    assert SoakOptions(gateway_url="http://gw:8080/", redis_url="redis://r:6379/0").gateway_url == "http://gw:8080"


def test_cli_bench_soak_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(["bench", "soak", "--calls", "30", "--concurrency", "10", "--retention", "3"])
    assert (args.calls, args.concurrency, args.retention, args.max_growth) == (30, 10, 3.0, 5.0)
    assert args.func.__name__ == "cmd_bench_soak" and args.short is False
    assert build_parser().parse_args(["bench", "soak", "--short"]).short is True
    assert main(["bench", "soak", "--concurrency", "0"]) == 2
    assert "voxcart bench soak: --concurrency must be 1..500; got 0" in capsys.readouterr().err


# -- the Redis probe (a real Redis) -------------------------------------------------------------------------------


@pytest.mark.redis
async def test_cli_bench_soak_probe_reads_keys_ttls_and_globals(redis_bus: RedisBus, redis_url: str) -> None:
    r = redis_bus.redis
    await r.hset(keys.meta(SID), "from", "+1555")  # no TTL: a violation
    await r.set(keys.gen(SID), 1, px=60_000)
    await r.xadd(keys.LIFECYCLE, {"d": b"x"})
    await r.zadd(keys.ACTIVE_CALLS, {OTHER: 1.0})
    await r.zadd(keys.CALLS_INDEX, {SID: 1.0, OTHER: 2.0})
    await r.hset(keys.capacity("stt"), "stt-0", "{}")  # no TTL yet, given one before the second read
    client = open_redis(redis_url)
    try:
        found = {k.name: k for k in await scan_keys(client, memory=True)}
        assert found[keys.gen(SID)].type == "string" and 0 < found[keys.gen(SID)].pttl_ms <= 60_000
        assert found[keys.meta(SID)].pttl_ms == -1 and (found[keys.meta(SID)].bytes or 0) > 0
        candidates = without_ttl(found.values())
        assert {k.name for k in candidates} == {keys.meta(SID), keys.capacity("stt")}
        await r.pexpire(keys.capacity("stt"), 60_000)
        confirmed = await without_ttl_confirmed(client, candidates, delay_s=0.05)
        assert [k.name for k in confirmed] == [keys.meta(SID)], "a key given its TTL a moment later is no violation"
        held = await still_held(client, [SID, OTHER])
        assert held == {keys.ACTIVE_CALLS: 1, keys.ADMISSION_QUEUE: 0, keys.ADMISSION_SEEN: 0, keys.CALLS_INDEX: 2}
        sizes = await global_sizes(client, found.values())
        assert sizes[keys.LIFECYCLE]["length"] == 1 and sizes[keys.LIFECYCLE]["ttl_s"] == -1
        assert sizes[keys.CALLS_INDEX]["length"] == 2 and keys.meta(SID) not in sizes
    finally:
        await client.aclose()


def test_cli_bench_soak_refuses_a_cluster() -> None:
    with pytest.raises(ValueError, match="not a Redis Cluster"):
        open_redis("redis+cluster://127.0.0.1:7000")
