"""The gateway's HTTP and websocket surface (FastAPI): Twilio webhooks, Media Streams, call records, health.

Invariants:
- No webhook waits on the dialog: ``/twilio/voice`` answers TwiML at once (Twilio allows 15 s in all).
- With ``TWILIO_AUTH_TOKEN`` set, every webhook and media-socket upgrade must carry a valid signature over the
  public URL Twilio used (``PUBLIC_URL``, else the forwarded proto/host); anything else gets 403.
- One bad socket never affects another call: protocol errors close only that socket, with a logged reason.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any

import uvicorn
from fastapi import FastAPI, Header, HTTPException, Request, Response, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from voxcart.common import events as ev
from voxcart.common.bus import Bus, BusError, RedisBus, keys
from voxcart.common.settings import Settings

from .calls import CallRegistry
from .records import get_record, list_records
from .session import FRAMES_IN, CallSession
from .twilio import media as tw
from .twilio.connection import MediaConnection
from .twilio.media import MediaProtocolError
from .twilio.rest import TwilioRest
from .twilio.signature import SignatureError, parse_form, public_url, public_ws_url, verify_signature
from .twilio.twiml import VoiceResponse

__all__ = ["create_app", "serve"]

log = logging.getLogger("voxcart.gateway.app")

MEDIA_PATH = "/twilio/media"
AFTER_STREAM_PATH = "/twilio/after-stream"
_MAX_FRAME = 64 * 1024


def _base_url(settings: Settings, scope: dict[str, Any], headers: Any) -> str:
    if settings.public_url:
        return settings.public_url
    proto = headers.get("x-forwarded-proto") or ("https" if scope.get("scheme") in ("https", "wss") else "http")
    host = headers.get("x-forwarded-host") or headers.get("host") or "localhost"
    return f"{proto.split(',')[0].strip()}://{host.split(',')[0].strip()}"


def create_app(settings: Settings, bus: Bus | None = None) -> FastAPI:
    """Build the gateway app; ``bus`` defaults to Redis at ``REDIS_URL``."""
    the_bus: Bus = bus or RedisBus(settings.redis_dsn)
    registry = CallRegistry(the_bus, block_ms=settings.xread_block_ms)
    rest: TwilioRest | None = None
    if settings.twilio_account_sid and settings.twilio_auth_token:
        rest = TwilioRest(settings.twilio_account_sid, settings.twilio_auth_token, base_url=settings.twilio_api_base)
    if not settings.twilio_auth_token:
        log.warning("TWILIO_AUTH_TOKEN is not set: webhook signatures are NOT checked (development only)")

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await registry.start()
        try:
            yield
        finally:
            await registry.stop()
            if rest is not None:
                await rest.aclose()
            await the_bus.close()

    app = FastAPI(title="voxcart gateway", lifespan=lifespan)
    app.state.registry = registry

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
        if not (sid.startswith("CA") and sid[2:].isalnum() and len(sid) <= 64):
            raise HTTPException(400, f"CallSid missing or malformed: {sid[:40]!r}")
        try:
            await registry.call_started(sid, form.get("From", ""), form.get("To", ""), form.get("AccountSid", ""))
        except BusError as exc:
            log.error("bus unavailable for a new call: %s", exc, extra={"call_sid": sid})
            return xml(VoiceResponse().say("Sorry, we cannot take your call right now. Please try again.").to_xml())
        base = _base_url(settings, dict(request.scope), request.headers)
        stream_url = public_ws_url(base, MEDIA_PATH)
        response = VoiceResponse().connect_stream(
            stream_url,
            action=public_url(base, AFTER_STREAM_PATH),
            parameters={"call_sid": sid},
            allow_insecure=stream_url.startswith("ws://"),
        )
        return xml(response.to_xml())

    @app.post(AFTER_STREAM_PATH)
    async def after_stream(request: Request) -> Response:
        """Twilio asks what next once our side closed the media socket: transfer, or hang up."""
        form = await signed_form(request)
        sid = form.get("CallSid", "")
        meta = await the_bus.hgetall(keys.meta(sid)) if sid else {}
        transfer = meta.get("transfer_to", b"").decode()
        if transfer:
            return xml(VoiceResponse().dial(transfer, timeout=25).to_xml())
        return xml(VoiceResponse().hangup().to_xml())

    @app.post("/twilio/status")
    async def status(request: Request) -> Response:
        form = await signed_form(request)
        sid, call_status = form.get("CallSid", ""), form.get("CallStatus", "")
        if sid and call_status:
            key = f"{sid}:{call_status}:{form.get('SequenceNumber', '')}"
            if await the_bus.set_nx(keys.dedupe("twilio", key), "1", 86_400_000):
                await the_bus.hset(keys.meta(sid), {"twilio_status": call_status})
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
        await _run_socket(websocket, registry, settings, rest, the_bus)

    def authorize(authorization: str | None) -> None:
        if settings.api_token and authorization != f"Bearer {settings.api_token}":
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    @app.get("/calls")
    async def calls(
        authorization: Annotated[str | None, Header()] = None, limit: int = 50, status: str | None = None
    ) -> JSONResponse:
        authorize(authorization)
        return JSONResponse({"calls": await list_records(the_bus, max(1, min(limit, 500)), status)})

    @app.get("/calls/{call_sid}")
    async def call(call_sid: str, authorization: Annotated[str | None, Header()] = None) -> JSONResponse:
        authorize(authorization)
        record = await get_record(the_bus, call_sid)
        if record is None:
            raise HTTPException(404, f"no call {call_sid!r}")
        return JSONResponse(record)

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        redis_ok = await the_bus.ping()
        workers: dict[str, int] = {}
        if redis_ok:
            now = ev.now_ms()
            for svc in ("stt", "brain", "tts"):
                workers[svc] = len(await the_bus.zrange_by_score(keys.workers(svc), now - 5000, float("inf")))
        body = {
            "status": "ok" if redis_ok else "redis unreachable",
            "calls": len(registry.sessions),
            "workers": workers,
            "workers_ready": bool(workers) and all(workers.values()),
        }
        return JSONResponse(body, status_code=200 if redis_ok else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app


async def _run_socket(
    websocket: WebSocket, registry: CallRegistry, settings: Settings, rest: TwilioRest | None, bus: Bus
) -> None:
    conn = MediaConnection()
    session: CallSession | None = None
    reason = "caller hung up"
    try:
        while True:
            frame = await websocket.receive_text()
            if len(frame) > _MAX_FRAME:
                raise MediaProtocolError(f"frame of {len(frame)} bytes exceeds {_MAX_FRAME}")
            msg = conn.receive(frame)
            if msg is None:
                continue
            FRAMES_IN.labels(type(msg).__name__.lower()).inc()
            if isinstance(msg, tw.Media):
                if session is not None:
                    session.on_media(msg.media.chunk, msg.media.payload, msg.media.timestamp)
            elif isinstance(msg, tw.Start):
                sid = conn.call_sid or ""
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
        with contextlib.suppress(Exception):
            await websocket.close(code=1003, reason=str(exc)[:120])
    finally:
        if session is not None:
            if session.ending is not None and reason != "protocol error":
                reason = "agent ended"
            await registry.detach(session, reason)


def serve(settings: Settings) -> None:
    """Run the gateway with uvicorn on ``HOST``:``PORT`` (``voxcart serve gateway``)."""
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        access_log=False,
        ws_max_size=_MAX_FRAME * 2,
        timeout_graceful_shutdown=30,
        lifespan="on",
    )
