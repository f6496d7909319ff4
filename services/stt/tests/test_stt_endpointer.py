"""VadEndpointer on real caller speech and real noise, with the real Silero and WebRTC detectors: onset, pre-roll,
end-of-speech silence (set, and longer on a noisy line), no starts on noise/clicks/coughs, and replay after a
rebase."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
import numpy.typing as npt
import pytest

from voxcart.common.audio import FRAME_BYTES, pcm16_to_ulaw, ulaw_to_pcm16
from voxcart.stt.endpointer import EndpointerConfig, Step, VadEndpointer

Pcm = list[tuple[str, bytes]]
VADS = ["silero", "webrtc"]


def _pcm_frames(ulaw: bytes, first: int = 1) -> Pcm:
    pcm = ulaw_to_pcm16(ulaw)
    return [(f"1-{first + k}", pcm[i : i + FRAME_BYTES].tobytes()) for k, i in enumerate(range(0, len(pcm), 160))]


def _silence(n: int, first: int) -> Pcm:
    return [(f"1-{first + k}", bytes(320)) for k in range(n)]


def _run(ep: VadEndpointer, frames: Pcm) -> list[Step]:
    return [ep.process(entry_id, pcm, 20.0 * k) for k, (entry_id, pcm) in enumerate(frames)]


def _to_frames(pcm: npt.NDArray[np.int16], first: int = 1) -> Pcm:
    """int16 samples through the μ-law path, as numbered 20 ms frames."""
    return _pcm_frames(pcm16_to_ulaw(pcm[: len(pcm) // 160 * 160]), first)


def _noise(level: float, n_frames: int, seed: int) -> npt.NDArray[np.int16]:
    noise = np.random.default_rng(seed).normal(0, level, 160 * n_frames)
    return np.clip(noise, -32768, 32767).astype(np.int16)


def _loud_span(frames: Pcm) -> tuple[int, int]:
    """Indices of the first and last frame louder than RMS 100: the words, in audio framed by digital silence."""
    levels = [float(np.sqrt(np.mean(np.frombuffer(pcm, np.int16).astype(np.float64) ** 2))) for _, pcm in frames]
    loud = [k for k, level in enumerate(levels) if level > 100]
    return loud[0], loud[-1]


def _index(entry_id: str) -> int:
    """The frame index of an entry id made by :func:`_pcm_frames` (first=1)."""
    return int(entry_id.split("-")[1]) - 1


def _utterances(steps: list[Step]) -> list[tuple[int, int]]:
    """(start step, end step) of each utterance, an unfinished one ending at -1."""
    starts = [k for k, s in enumerate(steps) if s.started]
    ends = [k for k, s in enumerate(steps) if s.ended]
    return list(zip(starts, ends + [-1] * (len(starts) - len(ends)), strict=True))


@pytest.fixture(scope="module")
def talk(speech: Callable[[str], bytes]) -> Pcm:
    """600 ms silence, "i want to return my shoes", 1 s silence."""
    return _pcm_frames(speech("i want to return my shoes"))


@pytest.fixture(scope="module")
def sentence_pcm(speech: Callable[[str], bytes]) -> npt.NDArray[np.int16]:
    """600 ms silence, "is the blue hoodie in stock in medium", 1 s silence; int16."""
    return ulaw_to_pcm16(speech("is the blue hoodie in stock in medium"))


def test_silence_never_starts_and_base_follows(talk: Pcm) -> None:
    ep = VadEndpointer()
    steps = _run(ep, _silence(100, 1))
    assert not any(s.started or s.frames for s in steps)
    assert ep.base_entry == "1-72"  # 100 frames fed, 28 (400 ms pre-roll + 160 ms window) retained
    assert ep.utterance_start is None and not ep.in_speech


@pytest.mark.parametrize("vad", VADS)
def test_one_utterance_with_pre_roll_and_end_silence(talk: Pcm, vad: Literal["silero", "webrtc"]) -> None:
    config = EndpointerConfig(end_silence_ms=500, pre_roll_ms=300, vad=vad)
    ep = VadEndpointer(config)
    steps = _run(ep, talk)
    starts = [k for k, s in enumerate(steps) if s.started]
    ends = [k for k, s in enumerate(steps) if s.ended]
    assert len(starts) == 1 and len(ends) == 1
    start = steps[starts[0]]
    voiced = [f for f in start.frames if f.voiced]
    assert len(voiced) >= 5  # 100 ms of speech inside the 160 ms window
    pre_roll = start.frames.index(voiced[0])
    assert pre_roll == 15  # 300 ms before the first voiced frame
    assert all(not f.voiced for f in start.frames[:pre_roll])
    # every frame from the start to the end is handed over exactly once
    handed = [f.entry_id for s in steps for f in s.frames]
    assert handed == [e for e, _ in talk][talk.index((handed[0], start.frames[0].pcm)) : ends[0] + 1]
    assert ep.last_voiced is not None
    last_voiced = int(ep.last_voiced.entry_id.split("-")[1])
    assert ends[0] + 1 - last_voiced == 25  # 500 ms of silence after the last voiced frame
    assert ep.utterance_start is None and not ep.in_speech


def test_clicks_in_the_silence_do_not_hold_the_utterance_open(talk: Pcm) -> None:
    rng = np.random.default_rng(3)
    click = rng.normal(0, 8000, 160).astype(np.int16).tobytes()
    clean = _run(VadEndpointer(), talk)
    end = next(k for k, s in enumerate(clean) if s.ended)
    clicked = list(talk)
    for k in range(end - 20, end, 6):  # a lone loud frame every 120 ms in the trailing silence
        clicked[k] = (clicked[k][0], click)
    steps = _run(VadEndpointer(), clicked)
    assert next(k for k, s in enumerate(steps) if s.ended) == end


def test_max_utterance_cuts_long_speech(talk: Pcm) -> None:
    config = EndpointerConfig(max_utterance_ms=1000, end_silence_ms=400)
    steps = _run(VadEndpointer(config), talk)
    first_end = next(k for k, s in enumerate(steps) if s.ended)
    start = next(k for k, s in enumerate(steps) if s.started)
    assert sum(len(s.frames) for s in steps[start : first_end + 1]) == 50


@pytest.mark.parametrize("vad", VADS)
def test_rebase_then_replay_gives_the_same_steps(talk: Pcm, vad: Literal["silero", "webrtc"]) -> None:
    """After a rebase, a fresh endpointer fed the frames after ``base_entry`` behaves identically."""
    noise = np.random.default_rng(7).normal(0, 300, 160 * 40).astype(np.int16)
    stream = [(f"1-{k + 1}", noise[k * 160 : (k + 1) * 160].tobytes()) for k in range(40)]
    stream += [(f"1-{41 + k}", pcm) for k, (_, pcm) in enumerate(talk)]
    config = EndpointerConfig(vad=vad)
    ep = VadEndpointer(config)
    _run(ep, stream[:40])
    base = ep.rebase()
    assert base is not None and base < "1-40"
    resume = [e for e, _ in stream].index(base) + 1
    replay = VadEndpointer(config, start_after=base)
    _run(replay, stream[resume:40])
    tail = stream[40:]
    a, b = _run(ep, tail), _run(replay, tail)
    assert a == b  # frames compared whole: level, probability and decision
    assert any(s.ended for s in a)
    assert ep.base_entry == replay.base_entry


def test_rebase_during_speech_is_refused(talk: Pcm) -> None:
    ep = VadEndpointer()
    for entry_id, pcm in talk:
        if ep.process(entry_id, pcm, 0.0).started:
            break
    assert ep.in_speech and ep.rebase() is None


@pytest.mark.parametrize("vad", VADS)
def test_caller_sentences_start_near_the_words(
    speech: Callable[[str], bytes], key_words: list[tuple[str, set[str]]], vad: Literal["silero", "webrtc"]
) -> None:
    """One utterance per sentence; its first voiced frame within 100 ms of the words, its last within 160 ms.

    Measured with Silero on 45 piper sentences: onset +20 ms median, +80 ms at most; WebRTC +20/+40 ms.
    """
    config = EndpointerConfig(vad=vad)
    for text, _ in key_words[:8]:
        frames = _pcm_frames(speech(text))
        first, last = _loud_span(frames)
        ep = VadEndpointer(config)
        steps = _run(ep, frames)
        assert len(_utterances(steps)) == 1, text
        start = next(s for s in steps if s.started)
        onset = next(_index(f.entry_id) for f in start.frames if f.voiced)
        assert 0 <= (onset - first) * 20 <= 100, (text, onset, first)
        assert ep.last_voiced is not None
        assert -160 <= (_index(ep.last_voiced.entry_id) - last) * 20 <= 20, text


@pytest.mark.parametrize("level", [30, 100, 300, 600, 1000, 2000])
@pytest.mark.parametrize("vad", VADS)
def test_white_noise_starts_nothing(level: int, vad: Literal["silero", "webrtc"]) -> None:
    """5 s of line noise from hiss (rms 30) to very loud (2000); WebRTC alone flags all of the loud ones."""
    steps = _run(VadEndpointer(EndpointerConfig(vad=vad)), _to_frames(_noise(level, 250, seed=level)))
    assert not any(s.started or s.frames for s in steps)


def test_clicks_and_coughs_start_nothing() -> None:
    """A 5 ms click and a 200 ms cough-like burst (pink noise, fast attack, 50 ms decay) on a hissing line.

    WebRTC (with its level gates) starts an utterance on every one of these coughs; Silero on none.
    """
    rng = np.random.default_rng(11)
    line = rng.normal(0, 30, 160 * 400)
    for k in range(40, 400, 60):  # a click every 1.2 s
        line[160 * k : 160 * k + 40] += rng.normal(0, 10_000, 40)
    for k in range(70, 400, 60):  # a cough every 1.2 s, between the clicks
        spectrum = np.fft.rfft(rng.normal(0, 1, 1600))
        spectrum[1:] /= np.sqrt(np.arange(1, len(spectrum)))
        burst = np.fft.irfft(spectrum, 1600)
        burst *= np.exp(-np.arange(1600) / 400) * np.minimum(1, np.arange(1600) / 80) * 8000 / burst.std()
        line[160 * k : 160 * k + 1600] += burst
    steps = _run(VadEndpointer(), _to_frames(np.clip(line, -32768, 32767).astype(np.int16)))
    assert not any(s.started or s.frames for s in steps)


def test_speech_in_noise_at_10_db_snr(sentence_pcm: npt.NDArray[np.int16]) -> None:
    """White noise 10 dB under the words: still one utterance, found near its start, with the noisy-line
    end silence (560 + 200 ms, the floor being above ``noisy_floor``)."""
    first, last = _loud_span(_to_frames(sentence_pcm))
    words = sentence_pcm[160 * first : 160 * (last + 1)].astype(np.float64)
    level = float(np.sqrt(np.mean(words**2))) / 10 ** (10 / 20)
    assert level >= EndpointerConfig().noisy_floor
    noisy = np.clip(sentence_pcm + _noise(level, len(sentence_pcm) // 160, seed=5), -32768, 32767).astype(np.int16)
    frames = _to_frames(np.concatenate([_noise(level, 60, seed=6), noisy]), first=1)
    ep = VadEndpointer(EndpointerConfig(denoise="off"))  # denoised, the line is quiet (test_stt_denoise)
    steps = _run(ep, frames)
    assert len(_utterances(steps)) == 1
    start = next(s for s in steps if s.started)
    onset = next(_index(f.entry_id) for f in start.frames if f.voiced) - 60
    assert 0 <= (onset - first) * 20 <= 200, onset - first
    end = next(k for k, s in enumerate(steps) if s.ended)
    assert ep.last_voiced is not None
    assert (end - _index(ep.last_voiced.entry_id)) * 20 == 760
    assert (last + 60 - _index(ep.last_voiced.entry_id)) * 20 <= 300


def test_set_end_silence_ms_applies_to_the_next_decision(talk: Pcm) -> None:
    ep = VadEndpointer()
    assert ep.end_silence_ms == 560
    steps = []
    for k, (entry_id, pcm) in enumerate(talk):
        step = ep.process(entry_id, pcm, 20.0 * k)
        if step.started:
            ep.set_end_silence_ms(300)  # the brain asked for a short turn during the answer
            assert ep.end_silence_ms == 300
        steps.append(step)
    end = next(k for k, s in enumerate(steps) if s.ended)
    assert ep.last_voiced is not None
    assert (end - _index(ep.last_voiced.entry_id)) * 20 == 300
    assert ep.end_silence_ms == 300  # it holds across the rebase at the end
    ep.set_end_silence_ms(None)
    assert ep.end_silence_ms == 560
    with pytest.raises(ValueError, match="set_end_silence_ms: 20 is not an integer of at least 40"):
        ep.set_end_silence_ms(20)
    with pytest.raises(ValueError, match=r"set_end_silence_ms: 30000 does not fit in max_utterance_ms \(20000\)"):
        ep.set_end_silence_ms(30_000)


@pytest.mark.parametrize("vad", VADS)
def test_fresh_endpointer_from_base_entry_reproduces_every_decision(
    speech: Callable[[str], bytes], vad: Literal["silero", "webrtc"]
) -> None:
    """Three sentences on a hissing line with digital-silence gaps (the Silero pre-filter holds and resumes):
    after every utterance end, a fresh endpointer fed the frames after ``base_entry`` makes the same steps."""
    hiss = _noise(40, 40, seed=9)
    parts = [hiss, ulaw_to_pcm16(speech("i want to return my shoes")), hiss]
    parts += [ulaw_to_pcm16(speech("yes")), _noise(80, 30, seed=10), ulaw_to_pcm16(speech("goodbye"))]
    stream = _to_frames(np.concatenate(parts))
    config = EndpointerConfig(vad=vad)
    ep = VadEndpointer(config)
    steps: list[Step] = []
    bases: list[tuple[int, str]] = []
    for k, (entry_id, pcm) in enumerate(stream):
        steps.append(ep.process(entry_id, pcm, 20.0 * k))
        if steps[-1].ended:
            bases.append((k, ep.base_entry))
    assert len(bases) == 3
    for at, base in bases:
        replay = VadEndpointer(config, start_after=base)
        resume = _index(base) + 1
        _run(replay, stream[resume : at + 1])
        tail = stream[at + 1 :]
        assert [replay.process(e, pcm, 20.0 * (at + 1 + k)) for k, (e, pcm) in enumerate(tail)] == steps[at + 1 :]


def test_bad_frame_and_bad_config() -> None:
    with pytest.raises(ValueError, match="entry 1-3: 160 PCM bytes, expected 320"):
        VadEndpointer().process("1-3", bytes(160), 0.0)
    with pytest.raises(ValueError, match="end_silence_ms"):
        EndpointerConfig(end_silence_ms=20)
    with pytest.raises(ValueError, match="start_voiced_ms"):
        EndpointerConfig(start_voiced_ms=200, start_window_ms=160)
    with pytest.raises(ValueError, match="pre_roll_ms"):
        EndpointerConfig(pre_roll_ms=-20)
    with pytest.raises(ValueError, match="vad_mode"):
        EndpointerConfig(vad_mode=7)
    with pytest.raises(ValueError, match="vad: 'torch' is not 'silero' or 'webrtc'"):
        EndpointerConfig(vad="torch")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"speech_threshold: 1.5 is not a probability in \(0, 1\]"):
        EndpointerConfig(speech_threshold=1.5)
    with pytest.raises(ValueError, match="release_threshold: 0.6 is above speech_threshold"):
        EndpointerConfig(release_threshold=0.6)
    with pytest.raises(ValueError, match="noisy_extra_ms"):
        EndpointerConfig(noisy_extra_ms=-20)
    with pytest.raises(ValueError, match="noise_ratio: -1"):
        EndpointerConfig(noise_ratio=-1)
    with pytest.raises(ValueError, match="max_utterance_ms: 700 is too short"):
        EndpointerConfig(max_utterance_ms=700)
    assert EndpointerConfig(noise_ratio=None, vad="webrtc").noise_ratio is None
