"""piper for real: the joe voice verified and loaded; stream invariants; cancel; tampered and incomplete files."""

from __future__ import annotations

import hashlib
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from voxcart.common.audio import FRAME_BYTES, SAMPLE_RATE, ulaw_rms, ulaw_to_pcm16
from voxcart.tts import piper
from voxcart.tts.piper import (
    JOE_CONFIG_MD5,
    JOE_VOICE_MD5,
    PiperSynthesizer,
    VoiceFileError,
    VoiceIntegrityError,
    load_piper_voice,
)
from voxcart.tts.synth import SynthesisStream, Synthesizer

PROMPT = "Thanks for calling. Your order one two three four five shipped yesterday and arrives Friday."  # speech.md §2
ONE_SENTENCE = "Your order one two three four five shipped yesterday and it should arrive on Friday afternoon."
LONG = " ".join(["This is a long reply that goes on for a while, so that it can be interrupted."] * 6)

CancelAfter = Callable[[Callable[..., SynthesisStream], str, int], tuple[list[bytes], SynthesisStream]]
TimedStream = Callable[[Callable[..., SynthesisStream], str], tuple[SynthesisStream, list[bytes], float]]


@pytest.fixture(scope="module")
def synth() -> PiperSynthesizer:
    started = time.perf_counter()
    synth = PiperSynthesizer.from_file()  # the bundled joe voice, md5-checked
    print(f"\npiper joe voice: verified and loaded in {(time.perf_counter() - started) * 1e3:.0f} ms")
    return synth


@pytest.fixture(scope="module")
def voice_copy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """An intact copy of the joe voice (``.onnx`` + ``.onnx.json``) somewhere else, and its SHA-256."""
    folder = tmp_path_factory.mktemp("voice")
    model = folder / "custom.onnx"
    shutil.copyfile(piper.joe_voice_path(), model)
    shutil.copyfile(f"{piper.joe_voice_path()}.json", f"{model}.json")
    return model, hashlib.sha256(model.read_bytes()).hexdigest()


def _piper_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "voxcart-tts-piper"]


def _seconds(chunks: list[bytes]) -> float:
    return sum(map(len, chunks)) / SAMPLE_RATE


def test_bundled_voice_is_the_upstream_one() -> None:
    path = piper.joe_voice_path()
    assert piper.file_digest(path, "md5") == JOE_VOICE_MD5
    assert piper.file_digest(Path(f"{path}.json"), "md5") == JOE_CONFIG_MD5


def test_is_a_synthesizer(synth: PiperSynthesizer) -> None:
    assert isinstance(synth, Synthesizer)
    assert synth.sample_rate == 22050


def test_chunks_are_whole_frames_at_phone_level(synth: PiperSynthesizer) -> None:
    chunks = list(synth.synthesize(PROMPT))
    assert 3.5 < _seconds(chunks) < 7.0, _seconds(chunks)
    assert all(len(c) == 800 for c in chunks[:-1])
    assert 0 < len(chunks[-1]) <= 800 and len(chunks[-1]) % FRAME_BYTES == 0
    audio = b"".join(chunks)
    assert 1500 < ulaw_rms(audio) < 6000
    assert np.abs(ulaw_to_pcm16(audio)).max() < 30000  # clear of clipping after resampling


def test_time_to_first_chunk_and_rtf(synth: PiperSynthesizer, timed_stream: TimedStream) -> None:
    """Streamed sentence by sentence: the first chunk leaves before the engine has done the whole text."""
    report = []
    for text in (PROMPT, ONE_SENTENCE):
        ttfc, rtf = [], []
        for _ in range(3):
            stream, chunks, factor = timed_stream(synth.synthesize, text)
            rtf.append(factor)
            ttfc.append(stream.stats.time_to_first_chunk or 0.0)
            assert stream.stats.engine_completed and not stream.stats.cancelled
            assert stream.stats.chunks == len(chunks) and stream.stats.audio_bytes == sum(map(len, chunks))
            if text is PROMPT:
                assert stream.stats.first_chunk_at is not None and stream.stats.engine_done_at is not None
                assert stream.stats.first_chunk_at < stream.stats.engine_done_at
        report.append(
            f"{text.count('.')} sentence(s), {_seconds(chunks):.1f} s: time to first chunk median "
            f"{sorted(ttfc)[1] * 1e3:.0f} ms (max {max(ttfc) * 1e3:.0f}), RTF median {sorted(rtf)[1]:.3f}"
        )
        assert max(ttfc) < 2.0 and max(rtf) < 0.8  # loose: the machine may be busy
    print("\npiper joe, 1 thread: " + "; ".join(report))


def test_lead_and_tail_silence_are_normalized(synth: PiperSynthesizer) -> None:
    pcm = ulaw_to_pcm16(b"".join(synth.synthesize("Hello there."))).astype(int)
    loud = np.flatnonzero(np.abs(pcm) > 100)
    ms = SAMPLE_RATE / 1000
    assert loud[0] / ms <= 15, f"first sound at {loud[0] / ms} ms"  # lead_ms=10 (piper starts with ~45 ms)
    gap_ms = (len(pcm) - loud[-1]) / ms
    assert 145 <= gap_ms <= 175, gap_ms  # tail_ms=150, plus padding of the last chunk to a whole frame


def test_sentences_are_separated_by_the_tail(synth: PiperSynthesizer) -> None:
    one = _seconds(list(synth.synthesize("Thanks for calling.")))
    two = _seconds(list(synth.synthesize("Thanks for calling. Thanks for calling.")))
    assert abs(two - 2 * one) < 0.25, (one, two)  # each sentence trimmed the same way: lead + speech + tail


def test_speed_and_deterministic_noise(synth: PiperSynthesizer) -> None:
    fast = PiperSynthesizer(synth.voice, speed=1.5, noise_scale=0.0, noise_w_scale=0.0)
    flat = PiperSynthesizer(synth.voice, noise_scale=0.0, noise_w_scale=0.0)
    normal = list(flat.synthesize(ONE_SENTENCE))
    assert normal == list(flat.synthesize(ONE_SENTENCE))  # no noise: the same audio every time
    assert 0.55 < _seconds(list(fast.synthesize(ONE_SENTENCE))) / _seconds(normal) < 0.8


def test_empty_text_has_no_chunks(synth: PiperSynthesizer) -> None:
    stream = synth.synthesize("  ")
    assert list(stream) == [] and stream.stats.engine_completed


def test_cancel_stops_between_chunks_and_stops_the_engine(synth: PiperSynthesizer, cancel_after: CancelAfter) -> None:
    got, stream = cancel_after(synth.synthesize, LONG, 3)
    assert len(got) == 3
    assert stream.stats.cancelled and not stream.stats.engine_completed
    assert not _piper_threads()


def test_cancel_set_before_start_yields_nothing(synth: PiperSynthesizer, cancel_after: CancelAfter) -> None:
    got, stream = cancel_after(synth.synthesize, PROMPT, 0)
    assert got == [] and stream.stats.cancelled


def test_close_terminates_the_inference_in_progress(synth: PiperSynthesizer) -> None:
    stream = synth.synthesize(f"Hi. {LONG.replace('.', ',')}")  # a short sentence, then one long one
    next(stream)
    started = time.perf_counter()
    stream.close()
    closed_in = time.perf_counter() - started
    assert not stream.stats.engine_completed and not _piper_threads()
    assert closed_in < 0.5, closed_in
    with pytest.raises(StopIteration):
        next(stream)


def test_bad_arguments(synth: PiperSynthesizer) -> None:
    with pytest.raises(ValueError, match="chunk_ms"):
        PiperSynthesizer(synth.voice, chunk_ms=30)
    with pytest.raises(ValueError, match="speed"):
        PiperSynthesizer(synth.voice, speed=9.0)
    with pytest.raises(ValueError, match="max 10"):
        PiperSynthesizer(synth.voice, max_chars=10).synthesize("This is more than ten characters.")
    with pytest.raises(ValueError, match="threads"):
        load_piper_voice(threads=0)


def test_user_voice_with_its_sha256_loads_and_speaks(voice_copy: tuple[Path, str]) -> None:
    model, sha256 = voice_copy
    synth = PiperSynthesizer.from_file(model, sha256.upper())
    assert _seconds(list(synth.synthesize("Hello."))) > 0.3


def test_user_voice_needs_a_sha256(voice_copy: tuple[Path, str]) -> None:
    model, _ = voice_copy
    with pytest.raises(VoiceFileError, match=f"{model}: a SHA-256 of the voice file is required"):
        load_piper_voice(model)
    with pytest.raises(VoiceFileError, match="64 hex digits"):
        load_piper_voice(model, "abc123")


def test_tampered_voice_is_refused_with_both_digests(voice_copy: tuple[Path, str], tmp_path: Path) -> None:
    model, sha256 = voice_copy
    tampered = tmp_path / "tampered.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0x01  # one changed byte in the weights
    tampered.write_bytes(data)
    shutil.copyfile(f"{model}.json", f"{tampered}.json")
    actual = hashlib.sha256(data).hexdigest()
    with pytest.raises(VoiceIntegrityError, match=f"{tampered}: sha256 {actual}, expected {sha256}; refusing"):
        load_piper_voice(tampered, sha256)


def test_tampered_bundled_voice_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = tmp_path / "en_US-joe-medium.onnx"
    fake.write_bytes(b"not the voice")
    shutil.copyfile(f"{piper.joe_voice_path()}.json", f"{fake}.json")
    monkeypatch.setattr(piper, "joe_voice_path", lambda: fake)
    actual = hashlib.md5(b"not the voice", usedforsecurity=False).hexdigest()
    with pytest.raises(VoiceIntegrityError, match=f"{fake}: md5 {actual}, expected {JOE_VOICE_MD5}"):
        PiperSynthesizer.from_file()


def test_missing_or_broken_config_is_a_clear_error(voice_copy: tuple[Path, str], tmp_path: Path) -> None:
    model, sha256 = voice_copy
    alone = tmp_path / "alone.onnx"
    alone.hardlink_to(model)
    with pytest.raises(VoiceFileError, match=f"{alone}.json: missing; a piper voice needs its .onnx.json"):
        load_piper_voice(alone, sha256)
    Path(f"{alone}.json").write_text("{not json")
    with pytest.raises(VoiceFileError, match=f"{alone}.json: not a piper voice config"):
        load_piper_voice(alone, sha256)
    with pytest.raises(VoiceFileError, match=f"{tmp_path / 'nowhere.onnx'}: no such voice file"):
        load_piper_voice(tmp_path / "nowhere.onnx", sha256)
