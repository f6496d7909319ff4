"""``voxcart call``: place a simulated call through the real Twilio protocol and print the conversation."""

from __future__ import annotations

import asyncio
import statistics
import sys
from collections.abc import Sequence

from voxcart.common.settings import Settings

from .simulator import CallResult, Dtmf, Line, SimulatorConfig, SimulatorError, simulate_call

__all__ = ["DEMO_LINES", "DEV_AUTH_TOKEN", "build_items", "place_call", "print_call"]

DEV_AUTH_TOKEN = "voxcart-dev-token"
"""The auth token ``voxcart up``/``demo`` give the gateway when none is configured, so signatures are checked."""

DEMO_LINES = ["where is my order", "yes", "is the blue hoodie in stock in medium", "thank you goodbye"]


def build_items(lines: Sequence[str]) -> list[Line | Dtmf]:
    """Caller lines -> simulator items: ``#123`` keys digits 1 2 3 (DTMF); anything else is spoken."""
    from .caller_voice import synthesize_caller

    items: list[Line | Dtmf] = []
    for line in lines:
        if line.startswith("#") and line[1:]:
            items.append(Dtmf(line[1:]))
        else:
            items.append(Line(synthesize_caller(line, lead_ms=200, tail_ms=100), line))
    return items


def print_call(result: CallResult, out: object = sys.stdout) -> None:
    write = out.write  # type: ignore[attr-defined]
    write(f"call {result.call_sid}\n")
    if result.holds or not result.stream_sids:  # held (lines busy), refused, or asked for a call back
        for text in result.said:
            write(f"  twilio says: {text}\n")
        if result.holds:
            write(f"  (on hold {result.held_s:.0f} s)\n")
    for turn in result.turns:
        if turn.kind == "greeting":
            who = "(call connects)"
        elif turn.kind == "dtmf":
            who = f"caller keys: {turn.caller}"
        else:
            who = f"caller: {turn.caller}"
        write(f"  {who}\n")
        latency = f"[{turn.latency_s * 1000:.0f} ms] " if turn.latency_s is not None else ""
        text = turn.agent_text or ("(no reply)" if turn.timed_out else "(audio)")
        write(f"  agent: {latency}{text}\n")
    if result.latencies:
        lat = sorted(result.latencies)
        write(
            f"turn latency: median {statistics.median(lat) * 1000:.0f} ms, max {lat[-1] * 1000:.0f} ms "
            f"over {len(lat)} turns; ended by {result.ended_by}"
            + (f" (transfer to {result.transfer_to})" if result.transfer_to else "")
            + "\n"
        )
    for error in result.errors:
        write(f"  protocol warning: {error}\n")


async def place_call(settings: Settings, url: str, lines: Sequence[str], from_number: str, wav: str | None) -> int:
    items = await asyncio.to_thread(build_items, lines)
    config = SimulatorConfig(
        gateway_url=url.rstrip("/"),
        auth_token=settings.twilio_auth_token or DEV_AUTH_TOKEN,
        public_url=settings.public_url or None,
        from_number=from_number,
        api_token=settings.api_token or None,
    )
    try:
        result = await simulate_call(config, items)
    except SimulatorError as exc:
        print(f"voxcart call: {exc}", file=sys.stderr)
        return 1
    print_call(result)
    if wav:
        result.save_wav(wav)
        print(f"saved both sides to {wav}")
    return 0 if result.turns and not any(t.timed_out for t in result.turns) else 1
