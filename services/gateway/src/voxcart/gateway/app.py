"""The gateway's HTTP and websocket surface (FastAPI): Twilio webhooks, Media Streams, call records, health.

Invariants:
- No webhook waits on the dialog: ``/twilio/voice`` answers TwiML at once (Twilio allows 15 s in all).
- With ``TWILIO_AUTH_TOKEN`` set, every webhook and media-socket upgrade must carry a valid signature over the
  public URL Twilio used (``PUBLIC_URL``, else the forwarded proto/host); anything else gets 403.
- One bad socket never affects another call: protocol errors close only that socket, with a logged reason.
- A media socket serves only the call the webhook admitted: its ``start`` must carry that call's media token
  (:mod:`.media_token`), else only that socket is closed (1008).
- New calls go through the rate limit and admission control first (:mod:`.intake`); ``ENV=production`` refuses to
  start without ``API_TOKEN`` (the records and call-back lists hold callers' numbers).
- A redeploy does not cut live calls: SIGTERM lets open media sockets finish, for up to ``DRAIN_SECONDS``.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import signal
import socket
import time
from collections.abc import AsyncIterator
from types import FrameType
from typing import Any, get_args

import msgspec
import uvicorn
from fastapi import FastAPI, HTTPException, Request, Response, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, Counter, generate_latest

from voxcart.common import events as ev
from voxcart.common.bus import Bus, BusError, keys, open_bus
from voxcart.common.memtrim import start_trimming
from voxcart.common.settings import Settings, SettingsError

from .admission import Admission
from .admission_store import open_admission_store
from .callbacks import callbacks_router
from .calls import CallRegistry
from .intake import ENDED, HOLD_PATH, Intake
from .media_token import MEDIA_TOKEN_REFUSED, PARAMETER, MediaTokens
from .rate_limit import RateLimiter
from .reconnect import after_stream_twiml
from .recorder import CallRecorder
from .records_api import records_router
from .records_store import RecordStore, RecordStoreError, open_record_store
from .session import FRAMES_IN, CallSession
from .twilio import media as tw
from .twilio.connection import MediaConnection
from .twilio.media import MediaProtocolError
from .twilio.rest import TwilioRest
from .twilio.signature import SignatureError, parse_form, public_url, public_ws_url, verify_signature
from .twilio.twiml import VoiceResponse
from .ws_protocol import MediaWebSocketProtocol

__all__ = ["DrainingServer", "create_app", "listen_sockets", "serve"]

log = logging.getLogger("voxcart.gateway.app")

MEDIA_PATH = "/twilio/media"
AFTER_STREAM_PATH = "/twilio/after-stream"
_MAX_FRAME = 64 * 1024


_FORWARDED_SCHEMES = {"https": "https", "wss": "https", "http": "http", "ws": "http"}


def _base_url(settings: Settings, scope: dict[str, Any], headers: Any) -> str:
    """The public base URL Twilio used: ``PUBLIC_URL``, else rebuilt from the request as a TLS proxy forwards it.

    Behind Railway's edge (and most proxies) the app sees plain http on an internal host; the first value of
    ``X-Forwarded-Proto`` (``https``; a ``wss`` some proxies send on upgrades counts as ``https``) and of
    ``X-Forwarded-Host`` (else ``Host``) give back the URL Twilio signed.
    """
    if settings.public_url:
        return settings.public_url
    forwarded = (headers.get("x-forwarded-proto") or "").split(",")[0].strip().lower()
    proto = _FORWARDED_SCHEMES.get(forwarded) or ("https" if scope.get("scheme") in ("https", "wss") else "http")
    host = headers.get("x-forwarded-host") or headers.get("host") or "localhost"
    return f"{proto}://{host.split(',')[0].strip()}"


def create_app(settings: Settings, bus: Bus | None = None, records: RecordStore | None = None) -> FastAPI:
    """Build the gateway app; ``bus`` defaults to Redis at ``REDIS_URL``, ``records`` to the store the settings name
    (``DATABASE_URL``, else SQLite at ``RECORDS_PATH``; :class:`RecordStoreError` if it cannot be opened).

    Raises:
        SettingsError: ``ENV=production`` without ``API_TOKEN``.
    """
    if settings.env == "production" and not settings.api_token:
        raise SettingsError("API_TOKEN: required when ENV=production (it guards /calls and /callbacks)")
    the_bus: Bus = bus or open_bus(settings.redis_dsn, cluster=settings.redis_cluster)
    recorder = CallRecorder(the_bus, records if records is not None else open_record_store(settings))
    registry = CallRegistry(
        the_bus,
        block_ms=settings.xread_block_ms,
        on_ended=recorder.call_ended,
        retention_ms=settings.call_retention_ms,
    )
    rest: TwilioRest | None = None
    if settings.twilio_account_sid and settings.twilio_auth_token:
        rest = TwilioRest(settings.twilio_account_sid, settings.twilio_auth_token, base_url=settings.twilio_api_base)
    if not settings.twilio_auth_token:
        log.warning("TWILIO_AUTH_TOKEN is not set: webhook signatures are NOT checked (development only)")

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await registry.start()
        recorder.start()
        try:
            yield
        finally:
            await registry.stop()
            await recorder.close()
            if rest is not None:
                await rest.aclose()
            await the_bus.close()

    app = FastAPI(title="voxcart gateway", lifespan=lifespan)
    app.state.registry = registry
    app.state.recorder = recorder
    tokens = MediaTokens.from_settings(settings)
    app.state.media_tokens = tokens
    admission_store = open_admission_store(the_bus)
    admission = Admission(admission_store, hold_s=settings.admission_hold_s)
    app.state.admission = admission
    intake = Intake(
        settings,
        admission,
        RateLimiter(admission_store, settings),
        recorder.store,
        registry.call_started,
        lambda base, sid: stream_twiml(base, sid),
    )

    async def signed_form(request: Request) -> dict[str, str]:
        body = await request.body()
        try:
            pairs = parse_form(body)
        except ValueError as exc:
            raise HTTPException(400, f"malformed form body: {exc}") from exc
        if settings.twilio_auth_token:
            url = public_url(
                _base_url(settings, dict(request.scope), request.headers),
                request.scope.get("raw_path") or request.scope["path"],
                request.scope["query_string"],
            )
            try:
                verify_signature(settings.twilio_auth_token, url, pairs, request.headers.get("x-twilio-signature"))
            except SignatureError as exc:
                log.warning("refused a webhook: %s", exc)
                raise HTTPException(403, "invalid Twilio signature") from exc
        return dict(pairs)

    def xml(twiml: str) -> Response:
        return Response(twiml, media_type="application/xml")

    @app.post("/twilio/voice")
    async def voice(request: Request) -> Response:
        form = await signed_form(request)
        sid = form.get("CallSid", "")
        if not _valid_sid(sid):
            raise HTTPException(400, f"CallSid missing or malformed: {sid[:40]!r}")
        return xml(await intake.arrive(form, _base_url(settings, dict(request.scope), request.headers)))

    @app.post(HOLD_PATH)
    async def hold(request: Request) -> Response:
        """A call on hold asks again (``<Redirect>``), or pressed a key (``<Gather>``)."""
        form = await signed_form(request)
        sid = form.get("CallSid", "")
        if not _valid_sid(sid):
            raise HTTPException(400, f"CallSid missing or malformed: {sid[:40]!r}")
        round_no, arrival = _int_param(request, "n"), _int_param(request, "t")
        base = _base_url(settings, dict(request.scope), request.headers)
        return xml(await intake.hold(form, base, round_no or 1, float(arrival) if arrival else None))

    def stream_twiml(base: str, sid: str) -> str:
        """The ``<Connect action><Stream>`` document of call ``sid``: the voice webhook's answer, and a broken
        stream's reconnection (:mod:`.reconnect`)."""
        stream_url = public_ws_url(base, MEDIA_PATH)
        response = VoiceResponse().connect_stream(
            stream_url,
            action=public_url(base, AFTER_STREAM_PATH),
            parameters={"call_sid": sid, PARAMETER: tokens.issue(sid)},
            allow_insecure=stream_url.startswith("ws://"),
        )
        return response.to_xml()

    @app.post(AFTER_STREAM_PATH)
    async def after_stream(request: Request) -> Response:
        """Twilio asks what next once the media stream ended: transfer or hang up when the agent ended the call,
        a fresh stream when it broke under a live call (a gateway replica died), at most twice."""
        form = await signed_form(request)
        sid = form.get("CallSid", "")
        base = _base_url(settings, dict(request.scope), request.headers)
        return xml(await after_stream_twiml(the_bus, sid, lambda: stream_twiml(base, sid), registry.end_call))

    @app.post("/twilio/status")
    async def status(request: Request) -> Response:
        form = await signed_form(request)
        sid, call_status = form.get("CallSid", ""), form.get("CallStatus", "")
        if sid and call_status:
            key = f"{sid}:{call_status}:{form.get('SequenceNumber', '')}"
            if await the_bus.set_nx(keys.dedupe("twilio", key), "1", 86_400_000):
                await the_bus.hset(keys.meta(sid), {"twilio_status": call_status})
            try:
                await intake.status(form)
                if call_status in ENDED:
                    await registry.twilio_ended(sid)
            except BusError as exc:
                log.warning("could not take an ended call off hold: %s", exc, extra={"call_sid": sid})
        return Response(status_code=204)

    @app.websocket(MEDIA_PATH)
    async def media(websocket: WebSocket) -> None:
        if settings.twilio_auth_token:
            url = public_ws_url(
                _base_url(settings, dict(websocket.scope), websocket.headers),
                websocket.scope.get("raw_path") or websocket.scope["path"],
                websocket.scope["query_string"],
            )
            try:
                verify_signature(settings.twilio_auth_token, url, {}, websocket.headers.get("x-twilio-signature"))
            except SignatureError as exc:
                log.warning("refused a media socket: %s", exc)
                await websocket.close(code=1008, reason="invalid Twilio signature")
                return
        await websocket.accept()
        await _run_socket(websocket, registry, settings, rest, the_bus, tokens)

    def authorize(authorization: str | None) -> None:
        if settings.api_token and authorization != f"Bearer {settings.api_token}":
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    app.include_router(records_router(the_bus, recorder.store, authorize))
    app.include_router(callbacks_router(recorder.store, authorize))

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        redis_ok = await the_bus.ping()
        workers: dict[str, int] = {}
        if redis_ok:
            now = ev.now_ms()
            for svc in ("stt", "brain", "tts"):
                workers[svc] = len(await the_bus.zrange_by_score(keys.workers(svc), now - 5000, float("inf")))
        capacity: dict[str, object] = {}
        queued: int | None = None
        with contextlib.suppress(BusError):
            if redis_ok:
                capacity = {svc: msgspec.to_builtins(c) for svc, c in (await admission.capacity()).items()}
                queued = await admission.queued()
        body = {
            "status": "ok" if redis_ok else "redis unreachable",
            "calls": len(registry.sessions),
            "workers": workers,
            "workers_ready": bool(workers) and all(workers.values()),
            "capacity": capacity,
            "queued": queued,
        }
        return JSONResponse(body, status_code=200 if redis_ok else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app


def _valid_sid(sid: str) -> bool:
    return sid.startswith("CA") and sid[2:].isalnum() and len(sid) <= 64


def _int_param(request: Request, name: str) -> int | None:
    """A non-negative integer query parameter of the hold URL (``n``, ``t``), else ``None``."""
    value = request.query_params.get(name, "")
    return int(value) if value.isdecimal() and len(value) <= 15 else None


_FRAMES_IN = {kind: FRAMES_IN.labels(kind.__name__.lower()) for kind in get_args(tw.InboundMessage)}


def _frames_in(msg: tw.InboundMessage) -> Counter:
    """The frames-in counter of ``msg``'s event (looked up once per kind: it counts 50 frames a second per call)."""
    return _FRAMES_IN[type(msg)]


class MediaTokenRefused(MediaProtocolError):
    """A ``start`` without its call's media token."""


async def _run_socket(
    websocket: WebSocket,
    registry: CallRegistry,
    settings: Settings,
    rest: TwilioRest | None,
    bus: Bus,
    tokens: MediaTokens,
) -> None:
    conn = MediaConnection()
    session: CallSession | None = None
    reason = "caller hung up"
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                raise WebSocketDisconnect(message.get("code", 1000), message.get("reason"))
            frame = message.get("text")
            if frame is None:
                size = len(message.get("bytes") or b"")
                raise MediaProtocolError(f"binary frame of {size} bytes (Media Streams frames are JSON text)")
            if len(frame) > _MAX_FRAME:
                raise MediaProtocolError(f"frame of {len(frame)} characters exceeds {_MAX_FRAME}")
            msg = conn.receive(frame)
            if msg is None:
                continue
            _frames_in(msg).inc()
            if isinstance(msg, tw.Media):
                if session is not None:
                    session.on_media(msg.media.chunk, msg.media.payload, msg.media.timestamp)
            elif isinstance(msg, tw.Start):
                sid = conn.call_sid or ""
                refusal = tokens.refusal(sid, conn.custom_parameters.get(PARAMETER))
                if refusal is not None:
                    MEDIA_TOKEN_REFUSED.labels(refusal).inc()
                    raise MediaTokenRefused(f"media token {refusal} for its callSid")
                gen = await bus.incr(keys.gen(sid), keys.CALL_TTL_MS)

                async def send(text: str) -> None:
                    await websocket.send_text(text)

                async def close_socket() -> None:
                    with contextlib.suppress(Exception):
                        await websocket.close(1000)

                async def end_call(call_sid: str) -> None:
                    assert rest is not None
                    await rest.hangup(call_sid)

                async def transfer_call(call_sid: str, number: str) -> None:
                    assert rest is not None
                    await rest.transfer(call_sid, number)

                session = CallSession(
                    conn,
                    gen,
                    registry.writer,
                    send,
                    close_socket,
                    end_call if rest else None,
                    registry.record_latency,
                    registry.remember_transfer,
                    transfer_call if rest else None,
                )
                await registry.attach(session)
                log.info("media stream started", extra={"call_sid": sid, "gen": gen})
            elif isinstance(msg, tw.Dtmf) and session is not None:
                session.on_dtmf(msg.dtmf.digit)
            elif isinstance(msg, tw.Mark) and session is not None:
                session.on_mark(msg.mark.name)
            elif isinstance(msg, tw.Stop):
                reason = "caller hung up"
                break
    except WebSocketDisconnect:
        reason = "agent ended" if session is not None and session.ending is not None else "socket closed"
    except MediaProtocolError as exc:
        reason = "protocol error"
        log.warning("closing a media socket: %s", exc, extra={"call_sid": conn.call_sid or ""})
        code = 1008 if isinstance(exc, MediaTokenRefused) else 1003  # 1008: policy violation
        with contextlib.suppress(Exception):
            # a close reason is at most 123 bytes of UTF-8
            await websocket.close(code=code, reason=str(exc).encode()[:120].decode("utf-8", "ignore"))
    finally:
        if session is not None:
            if session.ending is not None and reason != "protocol error":
                reason = "agent ended"
            await registry.detach(session, reason)


class DrainingServer(uvicorn.Server):
    """uvicorn, except that the first SIGTERM lets the live calls finish before the server stops.

    Told to stop, uvicorn closes every open websocket at once (code 1012): on a redeploy that would cut every call
    in progress. Here SIGTERM starts a drain instead: HTTP is still served and live media sockets carry on until
    the last call ends or ``drain_s`` has passed, then uvicorn's own shutdown runs. A second SIGTERM or any SIGINT
    stops at once. The platform sends new calls to the new deployment meanwhile.

    Args:
        config: the uvicorn configuration.
        registry: the gateway's live calls (:attr:`CallRegistry.sessions`).
        drain_s: the longest the drain may last; 0 stops at once, as plain uvicorn does.
    """

    def __init__(self, config: uvicorn.Config, registry: CallRegistry, drain_s: float) -> None:
        super().__init__(config)
        self._registry = registry
        self._drain_s = drain_s
        self.drain_deadline: float | None = None
        """``time.monotonic()`` by which the drain ends; None until SIGTERM."""
        self._drain_logged = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig == signal.SIGTERM and self.drain_deadline is None and self._drain_s > 0:
            self.drain_deadline = time.monotonic() + self._drain_s  # a signal handler: no logging here
            return
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if self.drain_deadline is not None and not self.should_exit:
            live = len(self._registry.sessions)
            if not self._drain_logged:
                self._drain_logged = True
                log.info("SIGTERM: draining %d live calls (at most %.0f s)", live, self._drain_s)
            if live == 0 or time.monotonic() >= self.drain_deadline:
                if live:
                    log.warning("drain time is up: closing %d live calls", live)
                self.should_exit = True
        return await super().on_tick(counter)


def serve(settings: Settings) -> None:
    """Run the gateway with uvicorn on ``HOST``:``PORT`` (``voxcart serve gateway``); SIGTERM drains the live
    calls for up to ``DRAIN_SECONDS`` first (see :class:`DrainingServer`)."""
    try:
        app = create_app(settings)
    except RecordStoreError as exc:
        raise SystemExit(f"voxcart gateway: call records: {exc}") from None
    except SettingsError as exc:
        raise SystemExit(f"voxcart gateway: bad setting: {exc}") from None
    # Everything built so far lives as long as the process: keep it out of the collector's full passes, which
    # otherwise scanned it all again and stalled every call's pacing for ~75-100 ms at 200 calls.
    gc.collect()
    gc.freeze()
    start_trimming()  # the calls' audio buffers leave free holes glibc keeps: give them back (memtrim)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        access_log=False,
        ws=MediaWebSocketProtocol,  # uvicorn's, without a pause/resume of the socket per frame
        ws_max_size=_MAX_FRAME * 2,
        timeout_graceful_shutdown=30,
        lifespan="on",
    )
    DrainingServer(config, app.state.registry, settings.drain_seconds).run(
        sockets=listen_sockets(settings.host, settings.port)
    )


def listen_sockets(host: str, port: int) -> list[socket.socket] | None:
    """The socket to serve on for ``HOST`` ``::``: one dual-stack socket, so IPv4 (a container's HEALTHCHECK on
    127.0.0.1, a proxy on IPv4) and IPv6 (Railway's private network) both reach the gateway; asyncio would make
    ``::`` IPv6-only. None for any other host: uvicorn binds it itself."""
    if host != "::":
        return None
    return [socket.create_server(("::", port), family=socket.AF_INET6, dualstack_ipv6=True)]
