"""The embedded synthesizer end to end: real espeak-ng, soxr resampling, μ-law chunks."""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable

import pytest

from voxcart.common.audio import FRAME_BYTES, SAMPLE_RATE, ulaw_rms, ulaw_to_pcm16
from voxcart.tts.espeak import EspeakError, VoiceSettings
from voxcart.tts.synth import EspeakSynthesizer, SynthesisError, SynthesisStream, Synthesizer

SENTENCE = "Thanks for calling. Your order shipped yesterday and arrives on Friday."
LONG = " ".join(["This is a long reply that goes on for a while, so that it can be interrupted."] * 8)
QUIET = 50.0  # μ-law rms (int16 units) below which a stretch counts as silence

CancelAfter = Callable[[Callable[..., SynthesisStream], str, int], tuple[list[bytes], SynthesisStream]]
TimedStream = Callable[[Callable[..., SynthesisStream], str], tuple[SynthesisStream, list[bytes], float]]


@pytest.fixture(scope="module")
def synth() -> EspeakSynthesizer:
    return EspeakSynthesizer()


def _engine_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "voxcart-tts-espeak"]


def _seconds(chunks: list[bytes]) -> float:
    return sum(map(len, chunks)) / SAMPLE_RATE


def test_is_a_synthesizer(synth: EspeakSynthesizer) -> None:
    assert isinstance(synth, Synthesizer)


def test_sentence_has_expected_duration_level_and_chunks(synth: EspeakSynthesizer) -> None:
    chunks = list(synth.synthesize(SENTENCE))
    assert 3.0 < _seconds(chunks) < 7.0, _seconds(chunks)
    assert ulaw_rms(b"".join(chunks)) > 1500
    assert all(len(c) == 800 for c in chunks[:-1])
    assert 0 < len(chunks[-1]) <= 800 and len(chunks[-1]) % FRAME_BYTES == 0


def test_chunk_size_is_configurable() -> None:
    chunks = list(EspeakSynthesizer(chunk_ms=20).synthesize("Hello."))
    assert all(len(c) == FRAME_BYTES for c in chunks) and len(chunks) > 10


def test_leading_silence_is_trimmed_and_tail_is_fixed() -> None:
    synth = EspeakSynthesizer(lead_ms=10, tail_ms=200)
    pcm = ulaw_to_pcm16(b"".join(synth.synthesize("Hello there."))).astype(int)
    loud = [i for i, x in enumerate(pcm) if abs(x) > 100]
    ms = SAMPLE_RATE / 1000
    assert loud[0] / ms <= 15, f"first sound at {loud[0] / ms} ms"  # espeak starts with about 13 ms of silence
    gap_ms = (len(pcm) - loud[-1]) / ms
    assert 195 <= gap_ms <= 225, gap_ms  # 200 ms tail, plus padding of the last chunk to a whole 20 ms frame


def test_time_to_first_chunk_and_rtf(synth: EspeakSynthesizer, timed_stream: TimedStream) -> None:
    ttfc, rtf = [], []
    for _ in range(5):
        stream, chunks, factor = timed_stream(synth.synthesize, LONG)
        rtf.append(factor)
        ttfc.append(stream.stats.time_to_first_chunk or 0.0)
        # streamed: the first chunk left before the engine had synthesized the whole text
        assert stream.stats.first_chunk_at is not None and stream.stats.engine_done_at is not None
        assert stream.stats.first_chunk_at < stream.stats.engine_done_at
        assert stream.stats.engine_completed and not stream.stats.cancelled
    print(f"\nespeak {_seconds(chunks):.1f} s of audio: time to first chunk median {sorted(ttfc)[2] * 1e3:.2f} ms, "
          f"max {max(ttfc) * 1e3:.2f} ms; RTF median {sorted(rtf)[2]:.4f}")  # fmt: skip
    assert max(ttfc) < 0.5 and max(rtf) < 0.1  # loose: the machine may be busy


def test_cancel_stops_between_chunks_and_stops_the_engine(synth: EspeakSynthesizer, cancel_after: CancelAfter) -> None:
    full = len(list(synth.synthesize(LONG)))
    got, stream = cancel_after(synth.synthesize, LONG, 3)
    assert len(got) == 3 < full
    assert stream.stats.cancelled and not stream.stats.engine_completed
    assert not _engine_threads()


def test_cancel_set_before_start_yields_nothing(synth: EspeakSynthesizer, cancel_after: CancelAfter) -> None:
    got, stream = cancel_after(synth.synthesize, SENTENCE, 0)
    assert got == [] and stream.stats.cancelled


def test_close_and_drop_release_the_engine(synth: EspeakSynthesizer) -> None:
    stream = synth.synthesize(LONG)
    next(stream)
    stream.close()
    assert not stream.stats.engine_completed and not _engine_threads()
    with pytest.raises(StopIteration):
        next(stream)

    dropped = synth.synthesize(LONG)
    next(dropped)
    del dropped
    gc.collect()
    start = time.perf_counter()
    assert len(list(synth.synthesize("Next caller."))) > 0
    assert time.perf_counter() - start < 1.0 and not _engine_threads()


def test_stalled_consumer_releases_the_engine() -> None:
    synth = EspeakSynthesizer(lookahead_ms=120, stall_timeout_s=0.2)
    stream = synth.synthesize(LONG)
    next(stream)
    time.sleep(0.5)  # the engine waits for us, gives up after 0.2 s and lets others in
    other = list(EspeakSynthesizer().synthesize("Meanwhile."))
    assert other
    with pytest.raises(SynthesisError, match="consumer took no audio for 0.2 s"):
        list(stream)


def test_two_threads_at_once_get_their_own_voice_and_text() -> None:
    a = EspeakSynthesizer(VoiceSettings(voice="en-us+f3", rate=140))
    b = EspeakSynthesizer(VoiceSettings(voice="en-gb-x-rp", rate=320))
    texts = {a: SENTENCE, b: LONG}
    serial = {s: _seconds(list(s.synthesize(t))) for s, t in texts.items()}
    results: dict[EspeakSynthesizer, list[float]] = {a: [], b: []}
    errors: list[BaseException] = []

    def run(s: EspeakSynthesizer) -> None:
        try:
            for _ in range(5):
                results[s].append(_seconds(list(s.synthesize(texts[s]))))
        except BaseException as exc:  # noqa: B036 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(s,)) for s in (a, b, a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors
    for s in (a, b):
        assert len(results[s]) == 10
        # espeak-ng varies a little run to run (up to ~0.3 %); another voice, rate or text would be far off
        assert all(abs(d - serial[s]) < max(0.05, 0.01 * serial[s]) for d in results[s]), (serial[s], results[s])


def test_text_is_normalized_before_synthesis(synth: EspeakSynthesizer) -> None:
    said = _seconds(list(synth.synthesize("$59.00")))
    words = _seconds(list(synth.synthesize("59 dollars")))
    raw = _seconds(list(EspeakSynthesizer(normalize=None).synthesize("$59.00")))  # "dollar fifty nine point zero zero"
    assert abs(said - words) < 0.05
    assert raw > said + 0.5


@pytest.mark.parametrize("text", ["", "   ", "🎉🎉", "**"])
def test_nothing_to_say_yields_no_chunks(synth: EspeakSynthesizer, text: str) -> None:
    assert list(synth.synthesize(text)) == []


def test_bad_input_is_named(synth: EspeakSynthesizer) -> None:
    with pytest.raises(TypeError, match="text must be str, got bytes"):
        synth.synthesize(b"hello")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="text has 20 characters, max 10"):
        EspeakSynthesizer(max_chars=10).synthesize("x" * 20)
    with pytest.raises(ValueError, match="chunk_ms: expected a positive multiple of 20, got 30"):
        EspeakSynthesizer(chunk_ms=30)
    with pytest.raises(ValueError, match="resample_quality"):
        EspeakSynthesizer(resample_quality="best")
    with pytest.raises(EspeakError, match="'xx-nope'"):
        EspeakSynthesizer(VoiceSettings(voice="xx-nope"))
