"""Twilio's side of a phone call, played against a running gateway (``voxcart call``, end-to-end tests).

What Twilio does, in order: POST the signed voice webhook; read ``<Connect><Stream>`` from the TwiML; open the
websocket with ``X-Twilio-Signature`` over the TwiML's stream URL; send ``connected`` and ``start``; then send one
160-byte μ-law ``media`` frame every 20 ms for as long as the call lasts (silence between the caller's lines, like
a real phone) and play the agent's audio at real time: a ``mark`` is echoed when all audio queued before it has
played, ``clear`` drops the queued audio and echoes every outstanding mark at once. When our side ends the call
it sends ``stop``; when the gateway closes the socket (or dies with it), the ``<Connect action>`` URL is requested
(a new ``<Connect>`` reconnects; ``<Dial>`` is a transfer). A status callback ``completed`` ends it all. With more
gateway replicas (``gateway_urls``) the simulator plays the load balancer too: a request or socket whose replica
refuses the connection goes to the next one, as does the new socket of a :class:`Reconnect` (Twilio reopening
the media socket by itself). While the lines
are busy the TwiML holds the caller instead: ``<Say>`` is noted, ``<Pause>`` and a ``<Gather>``'s ``timeout`` are
waited out (or the caller presses ``hold_keys``, posted to the ``<Gather action>`` as ``Digits``), ``<Redirect>``
fetches the next document, ``<Hangup/>`` ends the call.

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
import dataclasses
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
    Reconnect,
    SimulatorConfig,
    SimulatorError,
    StreamResult,
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
    "Reconnect",
    "SimulatorConfig",
    "SimulatorError",
    "StreamResult",
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


Item = Line | Dtmf | Overlap | Pause | Reconnect | bytes


class _Call:
    def __init__(self, cfg: SimulatorConfig, items: Sequence[Item], transport: Any) -> None:
        self.cfg, self.items, self.next_item = cfg, [Line(i) if isinstance(i, bytes) else i for i in items], 0
        self.public = (cfg.public_url or cfg.gateway_url).rstrip("/")
        self.http = httpx.AsyncClient(timeout=cfg.http_timeout_s, transport=transport)
        self.res = CallResult(call_sid="CA" + secrets.token_hex(16))
        self.loop = asyncio.get_running_loop()
        self.t0: float | None = None
        self.t0_wall = 0.0
        """Epoch seconds at ``t0`` (to place the call record's times on the simulator's clock)."""
        self.replicas = [url.rstrip("/") for url in (cfg.gateway_url, *cfg.gateway_urls)]
        self.replica = 0
        """The replica the load balancer sends requests and sockets to (index in ``replicas``)."""
        self.lingering: list[asyncio.Task[None]] = []
        """Sockets replaced by a :class:`Reconnect`, sending silence until the gateway closes them."""

    def next_replica(self) -> None:
        self.replica = (self.replica + 1) % len(self.replicas)

    def now_s(self) -> float:
        return self.loop.time() - (self.t0 if self.t0 is not None else self.loop.time())

    def _local(self, public: str) -> str:
        """Map a public URL (from TwiML) onto the gateway we can actually reach."""
        pub, gw, url = urlsplit(self.public), urlsplit(self.replicas[self.replica]), urlsplit(public)
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
        for _ in self.replicas:
            try:
                return await self.http.post(self._local(public), data=params, headers=headers)
            except httpx.ConnectError:  # a dead replica: the load balancer tries the next one
                self.next_replica()
        raise SimulatorError(f"POST {public}: no gateway replica accepts connections ({', '.join(self.replicas)})")

    async def twiml(self, public: str, status: str, extra: dict[str, str] | None = None) -> ET.Element:
        response = await self.webhook(public, status, extra)
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
                    held = await self.hold(before, voice_url, start) if not self.res.stream_sids else None
                    if held is not None:
                        doc = held
                        continue
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
                if not self.res.stream_sids:
                    self.res.held_s = self.loop.time() - start
                stream = verbs[at].find("Stream")
                assert stream is not None
                params = {p.get("name", ""): p.get("value", "") for p in stream.findall("Parameter")}
                while (ended := await MediaStream(self, stream.get("url", ""), params).run()) == "reconnect":
                    self.next_replica()  # Twilio's new socket reaches another replica
                if ended == "caller":
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
            await asyncio.gather(*self.lingering, return_exceptions=True)
            await self.http.aclose()
        return self.res

    async def hold(self, verbs: Sequence[ET.Element], voice_url: str, start: float) -> ET.Element | None:
        """Play a hold document as Twilio does (its top-level ``<Say>``s are already noted by :meth:`run`); the next
        document (``<Redirect>``, or the ``<Gather action>`` when the caller pressed keys), or ``None`` when the
        call ends here (``<Hangup/>``, no more verbs, or ``max_hold_s`` reached)."""
        for verb in verbs:
            if verb.tag == "Pause":
                await asyncio.sleep(float(verb.get("length", "1")))
            elif verb.tag == "Gather":
                self.res.said += [v.text or "" for v in verb if v.tag == "Say"]
                action = urljoin(voice_url, verb.get("action") or voice_url)
                if self.cfg.hold_keys:
                    keys = self.cfg.hold_keys
                    self.cfg = dataclasses.replace(self.cfg, hold_keys=None)  # pressed once
                    return await self.twiml(action, "in-progress", {"Digits": keys})
                for nested in verb:
                    if nested.tag == "Pause":
                        await asyncio.sleep(float(nested.get("length", "1")))
                await asyncio.sleep(float(verb.get("timeout", "5")))
            elif verb.tag == "Redirect":
                if self.loop.time() - start > self.cfg.max_hold_s:
                    self.res.errors.append(f"hung up after {self.cfg.max_hold_s:g} s on hold")
                    break
                self.res.holds += 1
                return await self.twiml(urljoin(voice_url, (verb.text or "").strip()), "in-progress")
            elif verb.tag == "Hangup":
                break
        self.res.held_s = self.loop.time() - start
        return None

    async def fetch_record(self) -> None:
        headers = {"Authorization": f"Bearer {self.cfg.api_token}"} if self.cfg.api_token else {}
        try:
            r = await self.http.get(f"{self.replicas[self.replica]}/calls/{self.res.call_sid}", headers=headers)
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
    items: Sequence[Item],
    *,
    transport: httpx.AsyncBaseTransport | None = None,
) -> CallResult:
    """Place one simulated call through the gateway and return what happened.

    Args:
        config: where the gateway is, the auth token, and caller behaviour.
        items: what the caller does, in order: :class:`Line` (μ-law audio, plus text), raw μ-law ``bytes``,
            :class:`Dtmf`, :class:`Pause` (silence), :class:`Overlap` (audio over the agent's reply), or
            :class:`Reconnect` (Twilio moves the call to a new media socket). The caller
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
