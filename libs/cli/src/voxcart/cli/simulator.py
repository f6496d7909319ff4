"""Twilio's side of a phone call, played against a running gateway (``voxcart call``, end-to-end tests).

What Twilio does, in order: POST the signed voice webhook; read ``<Connect><Stream>`` from the TwiML; open the
websocket with ``X-Twilio-Signature`` over the TwiML's stream URL; send ``connected`` and ``start``; then send one
160-byte μ-law ``media`` frame every 20 ms for as long as the call lasts (silence between the caller's lines, like
a real phone) and play the agent's audio at real time: a ``mark`` is echoed when all audio queued before it has
played, ``clear`` drops the queued audio and echoes every outstanding mark at once. When our side ends the call
it sends ``stop``; when the gateway closes the socket, the ``<Connect action>`` URL is requested (a new
``<Connect>`` reconnects; ``<Dial>`` is a transfer). A status callback ``completed`` ends it all.

This module is the public API and the call flow (webhooks, TwiML, reconnects, the call record);
``_simulator_stream`` plays one media websocket and ``_simulator_types`` holds the config, items and results,
all re-exported here.

Invariants: these modules share no code with the gateway's Twilio package (an independent implementation, so a
codec bug cannot cancel itself out); both tracks grow by exactly one 20 ms frame per tick, so they stay aligned
in :meth:`CallResult.save_wav`; a caller line starts only when the agent's audio has played and
``agent_silence_s`` of silence has followed it (or the reply timed out), an :class:`Overlap` while it plays;
every websocket message is timed in :attr:`CallResult.wire` (the barge-in bench's raw data).
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx

from ._simulator_stream import TICK as TICK  # kept importable from here, as before the split
from ._simulator_stream import MediaStream, sign
from ._simulator_types import (
    CallResult,
    Dtmf,
    Line,
    Overlap,
    OverlapKind,
    Pause,
    SimulatorConfig,
    SimulatorError,
    TurnResult,
    WireEvent,
)

__all__ = [
    "CallResult",
    "Dtmf",
    "Line",
    "Overlap",
    "OverlapKind",
    "Pause",
    "SimulatorConfig",
    "SimulatorError",
    "TurnResult",
    "WireEvent",
    "lines_from_text",
    "simulate_call",
]


def _parse_twiml(text: str) -> ET.Element:
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise SimulatorError(f"gateway TwiML is not XML ({exc}): {text[:120]!r}") from None
    if root.tag != "Response":
        raise SimulatorError(f"gateway TwiML root is <{root.tag}>, not <Response>")
    return root


class _Call:
    def __init__(
        self, cfg: SimulatorConfig, items: Sequence[Line | Dtmf | Overlap | Pause | bytes], transport: Any
    ) -> None:
        self.cfg, self.items, self.next_item = cfg, [Line(i) if isinstance(i, bytes) else i for i in items], 0
        self.public = (cfg.public_url or cfg.gateway_url).rstrip("/")
        self.http = httpx.AsyncClient(timeout=cfg.http_timeout_s, transport=transport)
        self.res = CallResult(call_sid="CA" + secrets.token_hex(16))
        self.loop = asyncio.get_running_loop()
        self.t0: float | None = None
        self.t0_wall = 0.0
        """Epoch seconds at ``t0`` (to place the call record's times on the simulator's clock)."""

    def now_s(self) -> float:
        return self.loop.time() - (self.t0 if self.t0 is not None else self.loop.time())

    def _local(self, public: str) -> str:
        """Map a public URL (from TwiML) onto the gateway we can actually reach."""
        pub, gw, url = urlsplit(self.public), urlsplit(self.cfg.gateway_url), urlsplit(public)
        if url.netloc != pub.netloc:
            return public
        ws = url.scheme in ("ws", "wss")
        scheme = {"http": "ws", "https": "wss"}[gw.scheme] if ws else gw.scheme
        return urlunsplit((scheme, gw.netloc, url.path, url.query, ""))

    async def webhook(self, public: str, status: str, extra: dict[str, str] | None = None) -> httpx.Response:
        params = {
            "CallSid": self.res.call_sid,
            "AccountSid": self.cfg.account_sid,
            "From": self.cfg.from_number,
            "To": self.cfg.to_number,
            "Caller": self.cfg.from_number,
            "Called": self.cfg.to_number,
            "CallStatus": status,
            "Direction": "inbound",
            "ApiVersion": "2010-04-01",
            **(extra or {}),
        }
        headers = {
            "X-Twilio-Signature": sign(self.cfg.auth_token, public, params),
            "I-Twilio-Idempotency-Token": str(uuid.uuid4()),
        }
        return await self.http.post(self._local(public), data=params, headers=headers)

    async def twiml(self, public: str, status: str) -> ET.Element:
        response = await self.webhook(public, status)
        if response.status_code != 200:
            raise SimulatorError(f"POST {public} answered HTTP {response.status_code}: {response.text[:200]}")
        self.res.twiml.append(response.text)
        return _parse_twiml(response.text)

    async def run(self) -> CallResult:
        start = self.loop.time()
        try:
            voice_url = self.public + self.cfg.voice_path
            doc, streams = await self.twiml(voice_url, "ringing"), 0
            while True:
                verbs = list(doc)
                at = next((i for i, v in enumerate(verbs) if v.tag == "Connect" and v.find("Stream") is not None), None)
                before = verbs if at is None else verbs[:at]
                self.res.said += [v.text or "" for v in before if v.tag == "Say"]
                if at is None:
                    dial = next((v for v in before if v.tag == "Dial"), None)
                    if dial is not None:
                        self.res.ended_by, self.res.transfer_to = "transfer", (dial.text or "").strip()
                    elif not self.res.stream_sids:
                        self.res.ended_by = "no_stream"
                    break
                if streams > self.cfg.max_reconnects:
                    self.res.errors.append(f"gave up after {self.cfg.max_reconnects} reconnects")
                    break
                streams += 1
                stream = verbs[at].find("Stream")
                assert stream is not None
                params = {p.get("name", ""): p.get("value", "") for p in stream.findall("Parameter")}
                if not await MediaStream(self, stream.get("url", ""), params).run():
                    break  # the caller hung up
                self.res.ended_by = "agent"
                action = verbs[at].get("action")
                if action:  # Twilio requests <Connect action> and runs what it returns
                    doc = await self.twiml(urljoin(voice_url, action), "in-progress")
                else:  # else it goes on with the verbs after <Connect>
                    doc = ET.Element("Response")
                    doc.extend(verbs[at + 1 :])
            self.res.duration_s = self.loop.time() - start
            if self.cfg.status_path:
                extra = {
                    "CallDuration": str(round(self.res.duration_s)),
                    "CallbackSource": "call-progress-events",
                    "SequenceNumber": "0",
                }
                r = await self.webhook(self.public + self.cfg.status_path, "completed", extra)
                if r.is_error:
                    self.res.errors.append(f"status callback answered HTTP {r.status_code}")
            if self.cfg.fetch_record:
                await self.fetch_record()
        finally:
            await self.http.aclose()
        return self.res

    async def fetch_record(self) -> None:
        headers = {"Authorization": f"Bearer {self.cfg.api_token}"} if self.cfg.api_token else {}
        try:
            r = await self.http.get(f"{self.cfg.gateway_url.rstrip('/')}/calls/{self.res.call_sid}", headers=headers)
            self.res.record = r.json() if r.status_code == 200 else None
        except (httpx.HTTPError, ValueError) as exc:
            self.res.errors.append(f"call record not available: {exc}")
        # agent texts before the first caller turn belong to the greeting, then to the k-th caller turn; a caller
        # turn that carries its first voiced frame's arrival (epoch ms) goes to the item whose voice started
        # nearest to it instead (items that were never transcribed, like a cough, then shift nothing)
        targets = [self.res.turns[0]] + [t for t in self.res.turns if t.kind != "greeting"] if self.res.turns else []
        turns = self.res.record.get("turns", []) if isinstance(self.res.record, dict) else []
        idx = 0
        for rec in turns if isinstance(turns, list) else []:
            if not isinstance(rec, dict):
                continue
            if rec.get("speaker") == "caller":
                idx = self._caller_target(rec.get("started_ms", rec.get("started")), targets, idx + 1)
            elif rec.get("speaker") == "agent" and idx < len(targets) and rec.get("text"):
                targets[idx].agent_text = f"{targets[idx].agent_text} {rec['text']}".strip()

    def _caller_target(self, started: object, targets: Sequence[TurnResult], fallback: int) -> int:
        """The index in ``targets`` of the item a caller record (first voiced arrival ``started``, epoch ms)
        belongs to: the voiced item starting nearest it, within 2 s; else ``fallback``."""
        if not isinstance(started, int | float) or started <= 0 or not self.t0_wall:
            return fallback
        at = started / 1000 - self.t0_wall
        near = [(abs(t.voice_start_s - at), i) for i, t in enumerate(targets) if i and t.voice_start_s is not None]
        best = min(near, default=None)
        return best[1] if best is not None and best[0] <= 2.0 else fallback


async def simulate_call(
    config: SimulatorConfig,
    items: Sequence[Line | Dtmf | Overlap | Pause | bytes],
    *,
    transport: httpx.AsyncBaseTransport | None = None,
) -> CallResult:
    """Place one simulated call through the gateway and return what happened.

    Args:
        config: where the gateway is, the auth token, and caller behaviour.
        items: what the caller does, in order: :class:`Line` (μ-law audio, plus text), raw μ-law ``bytes``,
            :class:`Dtmf`, :class:`Pause` (silence), or :class:`Overlap` (audio over the agent's reply). The caller
            waits for the greeting first, and for each reply before the next item; an ``Overlap`` starts ``at_ms``
            after the previous item's reply was first heard, while it plays.
        transport: optional httpx transport for the webhooks (tests); the websocket always uses a real socket.

    Raises:
        SimulatorError: the voice webhook failed or answered something that is not TwiML.
    """
    return await _Call(config, items, transport).run()


def lines_from_text(texts: Sequence[str], synthesize: Callable[[str], bytes]) -> list[Line]:
    """Turn caller sentences into :class:`Line` items with a μ-law synthesizer (e.g. ``synthesize_caller``)."""
    return [Line(synthesize(text), text) for text in texts]
