"""What the load bench runs: the caller's script and the options (``voxcart bench load``'s arguments, checked).

Invariants: options are checked when built (a bad one raises ``ValueError`` naming the option); the script's
first item is a plain line (an interruption needs a reply to talk over).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

__all__ = [
    "DEFAULT_JSON",
    "QUICK_SCRIPT",
    "SCRIPT",
    "WORKERS",
    "LoadOptions",
    "ScriptItem",
    "parse_ramp",
    "parse_replicas",
    "read_script",
]

DEFAULT_JSON: Final = "voxcart-bench-load.json"
WORKERS: Final = ("stt", "brain", "tts")
"""The services ``--replicas`` may start several processes of (the stack started here has one gateway)."""


@dataclass(frozen=True)
class ScriptItem:
    """One caller item: a line said after the agent's reply, or (``over_ms`` set) said over it."""

    text: str
    over_ms: float | None = None


SCRIPT: Final = (
    ScriptItem("is the blue hoodie in stock in medium"),
    ScriptItem("what is your return policy"),
    ScriptItem("what are your opening hours", over_ms=1500.0),
    ScriptItem("thank you goodbye"),
)
"""The default call: a product question, a long reply talked over 1.5 s in, and a goodbye (about 35 s)."""
QUICK_SCRIPT: Final = (ScriptItem("what are your opening hours"), ScriptItem("thank you goodbye"))


@dataclass
class LoadOptions:
    """What to run.

    Args:
        calls: concurrent calls (one step), unless ``ramp`` is given.
        ramp: numbers of calls, one step each, ascending; stops after the first step that is not real time.
        script: the caller's items.
        gateway_url: a running gateway; ``None`` starts the stack here.
        redis_url: that stack's Redis (for the per-turn timelines and finding its processes).
        stagger_s: seconds between two calls' starts.
        baseline: ``"inproc"`` to run the in-process baseline after the steps.
        json_path, chart_path, compare_path: outputs and the earlier run to compare with.
        log_path: the started stack's service logs.
        runs: runs of each step; the step reports the medians (:mod:`~voxcart.cli.bench.load_runs`).
        replicas: processes of each worker service of the stack started here (unnamed ones: 1).

    Raises:
        ValueError: a number out of range (the message names the option).
    """

    calls: int = 10
    ramp: Sequence[int] = ()
    script: Sequence[ScriptItem] = SCRIPT
    gateway_url: str | None = None
    redis_url: str = ""
    stagger_s: float = 0.25
    baseline: str | None = None
    json_path: str | None = DEFAULT_JSON
    chart_path: str | None = None
    compare_path: str | None = None
    log_path: str = "voxcart-bench-load.log"
    runs: int = 1
    replicas: Mapping[str, int] = field(default_factory=dict)
    steps: list[int] = field(init=False)

    def __post_init__(self) -> None:
        self.steps = list(self.ramp) or [self.calls]
        if any(not 1 <= n <= 500 for n in self.steps):
            raise ValueError(f"--calls/--ramp: each number of calls must be 1..500; got {self.steps}")
        if sorted(set(self.steps)) != self.steps:
            raise ValueError(f"--ramp: numbers of calls must be ascending without repeats; got {self.steps}")
        if not 0 <= self.stagger_s <= 10:
            raise ValueError(f"--stagger must be 0..10 s; got {self.stagger_s}")
        if self.baseline not in (None, "inproc"):
            raise ValueError(f"--baseline: only 'inproc' is known; got {self.baseline!r}")
        if not self.script or any(not item.text.strip() for item in self.script):
            raise ValueError("the script needs at least one caller line, and no empty one")
        if not 1 <= self.runs <= 20:
            raise ValueError(f"--runs must be 1..20; got {self.runs}")
        unknown = sorted(set(self.replicas) - set(WORKERS))
        if unknown:
            raise ValueError(f"--replicas: {', '.join(unknown)} cannot be replicated here; only {', '.join(WORKERS)}")
        if any(not 1 <= n <= 8 for n in self.replicas.values()):
            raise ValueError(f"--replicas: each service runs 1..8 processes; got {dict(self.replicas)}")
        if self.replicas and self.gateway_url is not None:
            raise ValueError("--replicas starts the stack here: it cannot be given with --gateway-url")
        if self.script[0].over_ms is not None:
            raise ValueError("the script's first item cannot talk over a reply the caller has not asked for")


def parse_ramp(text: str) -> list[int]:
    """``"5,10,20"`` -> ``[5, 10, 20]``.

    Raises:
        ValueError: not a comma-separated list of whole numbers.
    """
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"--ramp: expected numbers of calls like 5,10,20; got {text!r}") from None


def parse_replicas(text: str) -> dict[str, int]:
    """``"stt=2,brain=1"`` -> ``{"stt": 2, "brain": 1}`` (the services and counts are checked by :class:`LoadOptions`).

    Raises:
        ValueError: not a comma-separated list of ``service=number``.
    """
    out: dict[str, int] = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        svc, sep, count = part.partition("=")
        try:
            out[svc.strip()] = int(count)
        except ValueError:
            sep = ""
        if not sep:
            raise ValueError(f"--replicas: expected service=number pairs like stt=2,brain=1; got {text!r}")
    return out


def read_script(path: str) -> list[ScriptItem]:
    """Caller lines from a file, one per line; ``> text`` talks over the reply to the line before (1.5 s in);
    blank lines and ``# ...`` are skipped.

    Raises:
        ValueError: the file cannot be read or holds no line.
    """
    try:
        raw = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ValueError(f"--script {path}: {exc.strerror or exc}") from None
    items = []
    for line in (r.strip() for r in raw):
        if not line or line.startswith("#"):
            continue
        items.append(ScriptItem(line[1:].strip(), 1500.0) if line.startswith(">") else ScriptItem(line))
    if not items:
        raise ValueError(f"--script {path}: no caller line in it")
    return items
