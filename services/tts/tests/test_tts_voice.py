"""ThreadedVoice (real espeak and fake engines), FallbackVoice (fake voices, and a real fall back to espeak), and
build_voice's choices and start-up failures."""

from __future__ import annotations

import asyncio
import importlib.util
import threading
from collections.abc import AsyncIterator, Generator, Iterator

import pytest
from prometheus_client import REGISTRY

from voxcart.common.settings import Settings
from voxcart.tts.app import build_voice
from voxcart.tts.phrase_cache import PhraseCache
from voxcart.tts.piper import joe_voice_path
from voxcart.tts.synth import CancelToken, EspeakSynthesizer, SynthesisError
from voxcart.tts.voice import FallbackVoice, ThreadedVoice, Voice, VoiceError, aclosing_stream

SID = "CAttsvoice0001"


@pytest.fixture(scope="module")
def espeak() -> EspeakSynthesizer:
    return EspeakSynthesizer()


class FakeVoice:
    """Yields ``n`` chunks of its own byte; raises ``VoiceError`` (or ``error``) after ``fail_after`` chunks."""

    def __init__(self, name: str, byte: int, n: int = 3, fail_after: int | None = None) -> None:
        self.name, self.byte, self.n, self.fail_after = name, byte, n, fail_after
        self.error: Exception | None = None
        self.texts: list[str] = []
        self.ended: list[str] = []
        self.closed = False
        self.hold: asyncio.Event | None = None  # when set: wait for it after the first chunk

    def chunk(self, i: int) -> bytes:
        return bytes([self.byte]) * 160 + bytes([i])

    async def synthesize(self, text: str, *, call_sid: str, cancel: threading.Event) -> AsyncIterator[bytes]:
        self.texts.append(text)
        for i in range(self.n):
            if self.fail_after == i:
                raise self.error or VoiceError(f"{self.name}: 503 from the provider", chunks_yielded=i)
            if cancel.is_set():
                return
            yield self.chunk(i)
            if i == 0 and self.hold is not None:
                await self.hold.wait()
        if self.fail_after == self.n:
            raise self.error or VoiceError(f"{self.name}: connection dropped", chunks_yielded=self.n)

    async def end_call(self, call_sid: str) -> None:
        if self.error is not None:
            raise self.error
        self.ended.append(call_sid)

    async def aclose(self) -> None:
        self.closed = True


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def speak(voice: Voice, text: str = "Hello.", cancel: threading.Event | None = None) -> list[bytes]:
    async with aclosing_stream(voice.synthesize(text, call_sid=SID, cancel=cancel or threading.Event())) as chunks:
        return [chunk async for chunk in chunks]


def fallbacks(voice: str) -> float:
    return REGISTRY.get_sample_value("voxcart_tts_fallbacks_total", {"voice": voice}) or 0.0


def _same_speech(a: list[bytes], b: list[bytes]) -> bool:
    """Two renderings of one text by espeak-ng (which varies its samples slightly from run to run)."""
    whole_frames = all(len(c) % 160 == 0 for c in a + b)
    return whole_frames and all(len(c) == 800 for c in a[:-1]) and abs(len(a) - len(b)) <= 1 and len(a) > 5


def _voice_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.endswith("-voice")]


# --- ThreadedVoice ---------------------------------------------------------------------------------------


class ScriptedSynth:
    """A blocking synthesizer: ``n`` chunks (``None``: endless), then ``error``; records pulls and closing."""

    def __init__(self, n: int | None, error: Exception | None = None) -> None:
        self.n, self.error = n, error
        self.pulled = 0
        self.closed = threading.Event()
        self.pulled_enough = threading.Event()
        self.enough = 0

    def synthesize(self, text: str, cancel: CancelToken | None = None) -> Iterator[bytes]:
        if len(text) > 100:
            raise ValueError(f"text has {len(text)} characters, max 100")
        return self._gen(cancel)

    def _gen(self, cancel: CancelToken | None) -> Generator[bytes, None, None]:
        try:
            while self.n is None or self.pulled < self.n:
                if cancel is not None and cancel.is_set():
                    return
                self.pulled += 1
                if self.pulled == self.enough:
                    self.pulled_enough.set()
                yield b"\xff" * 160
            if self.error is not None:
                raise self.error
        finally:
            self.closed.set()


async def test_threaded_voice_yields_the_engines_chunks(espeak: EspeakSynthesizer) -> None:
    text = "Thanks for calling, how can I help you today?"
    got = await speak(ThreadedVoice(espeak, "espeak"), text)
    assert _same_speech(got, list(espeak.synthesize(text)))
    assert not _voice_threads()


async def test_threaded_voice_many_at_once_do_not_block_the_loop(espeak: EspeakSynthesizer) -> None:
    voice = ThreadedVoice(espeak, "espeak")
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    tick = asyncio.create_task(ticker())
    results = await asyncio.gather(*(speak(voice, f"Caller number {i}, please hold.") for i in range(20)))
    tick.cancel()
    assert all(len(r) > 5 for r in results)
    assert ticks > 20  # the event loop kept running while 20 engines worked


async def test_threaded_voice_engine_failure_is_a_voice_error() -> None:
    synth = ScriptedSynth(2, SynthesisError("espeak-ng failed: error 7"))
    voice = ThreadedVoice(synth, "espeak")
    got: list[bytes] = []
    with pytest.raises(VoiceError, match="espeak failed: espeak-ng failed: error 7") as err:
        async with aclosing_stream(voice.synthesize("Hi.", call_sid=SID, cancel=threading.Event())) as chunks:
            async for chunk in chunks:
                got.append(chunk)
    assert len(got) == 2 and err.value.chunks_yielded == 2
    assert isinstance(err.value.__cause__, SynthesisError)
    with pytest.raises(VoiceError, match="max 100") as err:
        await speak(voice, "x" * 101)
    assert err.value.chunks_yielded == 0


async def test_threaded_voice_cancel_stops_the_engine() -> None:
    synth = ScriptedSynth(None)
    cancel = threading.Event()
    got = []
    async with aclosing_stream(ThreadedVoice(synth, "endless").synthesize("Hi.", call_sid=SID, cancel=cancel)) as s:
        async for chunk in s:
            got.append(chunk)
            if len(got) == 2:
                cancel.set()
    assert len(got) == 2
    assert await asyncio.to_thread(synth.closed.wait, 5.0)


async def test_threaded_voice_consumer_leaving_closes_the_engine_and_bounds_lookahead() -> None:
    synth = ScriptedSynth(None)
    synth.enough = 4  # max_ahead 3: three ahead, then one more per chunk taken
    stream = ThreadedVoice(synth, "endless", max_ahead=3).synthesize("Hi.", call_sid=SID, cancel=threading.Event())
    async with aclosing_stream(stream) as chunks:
        async for _ in chunks:
            assert await asyncio.to_thread(synth.pulled_enough.wait, 5.0)
            await asyncio.sleep(0.1)  # time in which an unbounded pump would have run far ahead
            assert synth.pulled == 4
            break
    assert await asyncio.to_thread(synth.closed.wait, 5.0)


# --- FallbackVoice ---------------------------------------------------------------------------------------


async def test_fallback_unused_when_the_primary_works() -> None:
    primary, backup = FakeVoice("fb-ok", 1), FakeVoice("espeak", 2)
    voice = FallbackVoice(primary, backup)
    assert voice.name == "fb-ok"
    assert await speak(voice) == [primary.chunk(i) for i in range(3)]
    assert backup.texts == [] and fallbacks("fb-ok") == 0


async def test_fallback_speaks_the_sentence_when_the_primary_fails_before_audio() -> None:
    primary, backup = FakeVoice("fb-before", 1, fail_after=0), FakeVoice("espeak", 2)
    voice = FallbackVoice(primary, backup)
    assert await speak(voice, "Your order shipped.") == [backup.chunk(i) for i in range(3)]
    assert backup.texts == ["Your order shipped."] and fallbacks("fb-before") == 1


async def test_fallback_repeats_the_whole_sentence_after_a_mid_sentence_failure() -> None:
    primary, backup = FakeVoice("fb-mid", 1, fail_after=2), FakeVoice("espeak", 2)
    got = await speak(FallbackVoice(primary, backup), "It arrives Friday.")
    assert got == [primary.chunk(0), primary.chunk(1)] + [backup.chunk(i) for i in range(3)]
    assert fallbacks("fb-mid") == 1


async def test_fallback_takes_a_non_voice_error_too() -> None:
    primary, backup = FakeVoice("fb-bug", 1, fail_after=0), FakeVoice("espeak", 2)
    primary.error = KeyError("a bug in the provider")
    assert await speak(FallbackVoice(primary, backup)) == [backup.chunk(i) for i in range(3)]


async def test_fallback_cooldown_then_probe() -> None:
    clock = Clock()
    primary, backup = FakeVoice("fb-cool", 1, fail_after=0), FakeVoice("espeak", 2)
    voice = FallbackVoice(primary, backup, cooldown_s=30, clock=clock)
    await speak(voice)
    assert len(primary.texts) == 1 and voice.primary_skipped
    primary.fail_after = None  # it has recovered, but the breaker is open
    clock.now += 29
    assert await speak(voice) == [backup.chunk(i) for i in range(3)]
    assert len(primary.texts) == 1 and fallbacks("fb-cool") == 2
    clock.now += 2  # cooldown over: the next sentence probes the primary, which works: closed again
    assert await speak(voice) == [primary.chunk(i) for i in range(3)]
    assert not voice.primary_skipped
    assert await speak(voice) == [primary.chunk(i) for i in range(3)]
    assert len(primary.texts) == 3 and fallbacks("fb-cool") == 2


async def test_fallback_failed_probe_opens_again() -> None:
    clock = Clock()
    primary, backup = FakeVoice("fb-probe", 1, fail_after=0), FakeVoice("espeak", 2)
    voice = FallbackVoice(primary, backup, cooldown_s=30, clock=clock)
    await speak(voice)
    clock.now += 31
    await speak(voice)  # the probe fails too
    assert len(primary.texts) == 2 and voice.primary_skipped
    clock.now += 29
    await speak(voice)
    assert len(primary.texts) == 2


async def test_fallback_probes_with_one_sentence_at_a_time() -> None:
    clock = Clock()
    primary, backup = FakeVoice("fb-half", 1, fail_after=0), FakeVoice("espeak", 2)
    voice = FallbackVoice(primary, backup, cooldown_s=30, clock=clock)
    await speak(voice)
    clock.now += 31
    primary.fail_after, primary.hold = None, asyncio.Event()
    probe = voice.synthesize("probe", call_sid=SID, cancel=threading.Event())
    assert await anext(probe) == primary.chunk(0)  # the probe is under way...
    assert await speak(voice, "meanwhile") == [backup.chunk(i) for i in range(3)]  # ...others use the fallback
    primary.hold.set()
    assert [c async for c in probe] == [primary.chunk(1), primary.chunk(2)]
    assert not voice.primary_skipped


async def test_fallback_not_used_for_a_cancelled_sentence() -> None:
    primary, backup = FakeVoice("fb-cancel", 1, fail_after=1), FakeVoice("espeak", 2)
    cancel = threading.Event()
    got = []
    async with aclosing_stream(FallbackVoice(primary, backup).synthesize("Hi.", call_sid=SID, cancel=cancel)) as s:
        async for chunk in s:
            got.append(chunk)
            cancel.set()  # the caller barged in; then the primary fails
    assert got == [primary.chunk(0)] and backup.texts == []


async def test_fallback_failing_too_raises() -> None:
    voice = FallbackVoice(FakeVoice("fb-both", 1, fail_after=0), FakeVoice("espeak", 2, fail_after=1))
    with pytest.raises(VoiceError, match="espeak: 503"):
        await speak(voice)


async def test_fallback_end_call_and_aclose_reach_both() -> None:
    primary, backup = FakeVoice("fb-end", 1), FakeVoice("espeak", 2)
    primary.error = ConnectionResetError("websocket already gone")
    voice = FallbackVoice(primary, backup)
    await voice.end_call(SID)
    assert backup.ended == [SID]
    await voice.aclose()
    assert primary.closed and backup.closed


async def test_fallback_to_real_espeak(espeak: EspeakSynthesizer) -> None:
    text = "Sorry, I did not catch that."
    voice = FallbackVoice(FakeVoice("fb-real", 1, fail_after=0), ThreadedVoice(espeak, "espeak"))
    assert _same_speech(await speak(voice, text), list(espeak.synthesize(text)))
    assert fallbacks("fb-real") == 1


# --- build_voice -----------------------------------------------------------------------------------------


async def test_build_voice_espeak_with_and_without_cache() -> None:
    cached = build_voice(Settings())
    assert isinstance(cached, PhraseCache) and cached.max_entries == 200
    assert isinstance(cached.voice, ThreadedVoice) and cached.name == "espeak"
    plain = build_voice(Settings(tts_phrase_cache=0))
    assert isinstance(plain, ThreadedVoice)
    assert len(await speak(plain)) > 2


def test_build_voice_bad_espeak_voice_stops_at_start() -> None:
    with pytest.raises(SystemExit, match="TTS_VOICE='xx-nonexistent'.*unknown voice"):
        build_voice(Settings(tts_voice="xx-nonexistent"))


async def test_build_voice_piper_falls_back_to_espeak_and_caches_only_piper() -> None:
    voice = build_voice(Settings(tts_provider="piper"))
    assert isinstance(voice, FallbackVoice) and voice.name == "piper"
    assert isinstance(voice.primary, PhraseCache) and isinstance(voice.primary.voice, ThreadedVoice)
    assert isinstance(voice.fallback, ThreadedVoice) and voice.fallback.name == "espeak"
    first = await speak(voice, "Thanks for calling.")
    assert first and await speak(voice, "Thanks for calling.") == first  # the second one is a cache hit
    await voice.aclose()


def test_build_voice_piper_bad_files_stop_at_start() -> None:
    with pytest.raises(SystemExit, match="TTS_VOICE_SHA256 is required with TTS_VOICE_PATH"):
        build_voice(Settings(tts_provider="piper", tts_voice_path="/srv/voices/a.onnx"))
    path = joe_voice_path()
    with pytest.raises(SystemExit, match=f"{path}: sha256 [0-9a-f]{{64}}, expected {'0' * 64}; refusing"):
        build_voice(Settings(tts_provider="piper", tts_voice_path=str(path), tts_voice_sha256="0" * 64))
    with pytest.raises(SystemExit, match="/srv/voices/a.onnx: no such voice file"):
        build_voice(Settings(tts_provider="piper", tts_voice_path="/srv/voices/a.onnx", tts_voice_sha256="0" * 64))


async def test_build_voice_elevenlabs() -> None:
    with pytest.raises(SystemExit, match="needs ELEVENLABS_API_KEY"):
        build_voice(Settings(tts_provider="elevenlabs"))
    settings = Settings(tts_provider="elevenlabs", elevenlabs_api_key="sk-test")
    if importlib.util.find_spec("voxcart.tts.elevenlabs") is None:
        with pytest.raises(SystemExit, match="not available"):
            build_voice(settings)
        return
    voice = build_voice(settings)
    assert isinstance(voice, FallbackVoice) and voice.fallback.name == "espeak"
    assert isinstance(voice.primary, PhraseCache)
    await voice.aclose()
