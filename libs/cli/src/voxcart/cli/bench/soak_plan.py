"""What the soak runs: its options (``voxcart bench soak``'s arguments, checked), each call's plan, the stack it
calls, and what it keeps of each call.

Invariants: options are checked when built (a bad one raises ``ValueError`` naming the option); every call has a
caller number of its own (the gateway's per-number rate limit never applies); a call is kept as a few numbers,
never its audio.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from voxcart.cli.simulator import CallResult

__all__ = ["GOODBYES", "QUESTIONS", "CallPlan", "SoakOptions", "SoakTarget", "plan_call", "summarize_call"]

QUESTIONS: Final = (
    "what are your opening hours",
    "how long does shipping take",
    "what time do you close",
    "how much is shipping",
    "when are you open",
    "do you have express shipping",
)
GOODBYES: Final = ("thank you goodbye", "that is all thank you", "thanks bye")


@dataclass(frozen=True)
class CallPlan:
    """One call of the soak: who calls, and what they say after the greeting."""

    index: int
    from_number: str
    lines: tuple[str, ...]
    """What the caller says, in order: a question (unless short) and a goodbye."""


def plan_call(index: int, block: int = 0, *, short: bool = False) -> CallPlan:
    """The ``index``-th call: its own number (``block`` tells soaks apart), a question (unless ``short``) and a
    goodbye by rotation."""
    question = QUESTIONS[index % len(QUESTIONS)]
    goodbye = GOODBYES[(index // len(QUESTIONS)) % len(GOODBYES)]
    return CallPlan(
        index=index,
        from_number=f"+1555{block % 1000:03d}{index % 10_000:04d}",
        lines=(goodbye,) if short else (question, goodbye),
    )


@dataclass
class SoakOptions:
    """What to run.

    Args:
        calls: calls in all.
        concurrency: calls at a time.
        retention_s: ``CALL_RETENTION_MS`` of the stack, in seconds (started here: set to this, default 5 s;
            reached at ``gateway_url``: what it uses, default this process's ``CALL_RETENTION_MS``).
        gateway_url: a running gateway; ``None`` starts the stack here.
        redis_url: that stack's Redis (required with ``gateway_url``); for a stack started here, the Redis to
            start it on (default: one of its own).
        json_path: where to write the full result, or ``None``.
        log_path: the started stack's service logs.
        warmup_calls: calls completed that end the warm-up (default 10 % of ``calls``, at least 1).
        max_growth_pct: the memory bound after warm-up, per service process.
        stagger_s: seconds between the first calls' starts.
        reply_timeout_s: how long a caller waits for the greeting or a reply.
        sample_s: memory sampling interval.
        short: calls of the greeting and a goodbye only (about 15 s instead of 26 s).

    Raises:
        ValueError: an option out of range (the message names it).
    """

    calls: int = 1000
    concurrency: int = 50
    retention_s: float | None = None
    gateway_url: str | None = None
    redis_url: str = ""
    json_path: str | None = None
    log_path: str = "voxcart-bench-soak.log"
    warmup_calls: int | None = None
    max_growth_pct: float = 5.0
    stagger_s: float = 0.1
    reply_timeout_s: float = 30.0
    sample_s: float = 1.0
    short: bool = False

    def __post_init__(self) -> None:
        if not 2 <= self.calls <= 100_000:
            raise ValueError(f"--calls must be 2..100000; got {self.calls}")
        if not 1 <= self.concurrency <= 500:
            raise ValueError(f"--concurrency must be 1..500; got {self.concurrency}")
        if self.retention_s is not None and not 1 <= self.retention_s <= 7200:
            raise ValueError(f"--retention must be 1..7200 seconds; got {self.retention_s:g}")
        if self.warmup_calls is not None and not 1 <= self.warmup_calls < self.calls:
            raise ValueError(f"--warmup must be 1..{self.calls - 1} calls; got {self.warmup_calls}")
        if not 0 < self.max_growth_pct <= 1000:
            raise ValueError(f"--max-growth must be in (0, 1000] %; got {self.max_growth_pct:g}")
        if not 0 <= self.stagger_s <= 10:
            raise ValueError(f"--stagger must be 0..10 seconds; got {self.stagger_s:g}")
        if self.gateway_url is not None and not self.redis_url:
            raise ValueError("--gateway-url needs --redis-url (or REDIS_URL): the soak audits that stack's Redis")
        if self.gateway_url is not None:
            self.gateway_url = self.gateway_url.rstrip("/")

    @property
    def warmup(self) -> int:
        return self.warmup_calls or max(1, self.calls // 10)


@dataclass
class SoakTarget:
    """The stack the soak calls: where it is, its processes, and the retention it uses."""

    url: str
    redis_url: str
    procs: dict[str, int]
    """label (``gateway``, ``stt``, ``stt#2``..., ``redis``) -> pid."""
    retention_s: float
    started_here: bool
    env: dict[str, str] = field(default_factory=dict)
    log_path: str | None = None
    log_offset: int = 0
    stop: Callable[[], None] = lambda: None


def summarize_call(plan: CallPlan, result: CallResult | str, ended_s: float) -> dict[str, Any]:
    """A call as the report keeps it: a few numbers, and why it failed (``problem``), if it did.

    A call completes when it reached the agent (a media stream), the greeting and every line were answered in
    time, and no protocol error was seen.
    """
    if isinstance(result, str):
        return {"index": plan.index, "sid": None, "ok": False, "problem": result, "ended_s": round(ended_s, 2)}
    lines = [t for t in result.turns if t.kind != "greeting"]
    problems = []
    if not result.stream_sids:
        said = "; ".join(s for s in result.said if s)[:120]
        problems.append(f"never connected (ended: {result.ended_by}{'; twilio said: ' + said if said else ''})")
    timed_out = [t.kind if t.kind == "greeting" else repr(t.caller) for t in result.turns if t.timed_out]
    if timed_out:
        problems.append(f"no reply in time to {', '.join(timed_out)}")
    if result.stream_sids and len(lines) < len(plan.lines):
        problems.append(f"ended by the {result.ended_by} after {len(lines)} of {len(plan.lines)} lines")
    if result.ended_by == "transfer":
        problems.append(f"transferred to {result.transfer_to}")
    if result.errors:
        problems.append("; ".join(result.errors[:3]))
    greeting = next((t for t in result.turns if t.kind == "greeting"), None)
    return {
        "index": plan.index,
        "sid": result.call_sid,
        "ok": not problems,
        "problem": "; ".join(problems) or None,
        "ended_by": result.ended_by,
        "answered": sum(t.latency_s is not None and not t.timed_out for t in lines),
        "greeted": greeting is not None and greeting.latency_s is not None,
        "latencies_s": [round(t.latency_s, 3) for t in lines if t.latency_s is not None],
        "greeting_s": round(greeting.latency_s, 3) if greeting is not None and greeting.latency_s else None,
        "holds": result.holds,
        "held_s": round(result.held_s, 2) if result.holds else 0.0,
        "duration_s": round(result.duration_s, 2),
        "protocol_errors": len(result.errors),
        "ended_s": round(ended_s, 2),
    }
