"""VadEndpointer on real caller speech: pre-roll, end-of-speech silence, clicks, and replay after a rebase."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from voxcart.common.audio import FRAME_BYTES, ulaw_to_pcm16
from voxcart.stt.endpointer import EndpointerConfig, Step, VadEndpointer

Pcm = list[tuple[str, bytes]]


def _pcm_frames(ulaw: bytes, first: int = 1) -> Pcm:
    pcm = ulaw_to_pcm16(ulaw)
    return [(f"1-{first + k}", pcm[i : i + FRAME_BYTES].tobytes()) for k, i in enumerate(range(0, len(pcm), 160))]


def _silence(n: int, first: int) -> Pcm:
    return [(f"1-{first + k}", bytes(320)) for k in range(n)]


def _run(ep: VadEndpointer, frames: Pcm) -> list[Step]:
    return [ep.process(entry_id, pcm, 20.0 * k) for k, (entry_id, pcm) in enumerate(frames)]


@pytest.fixture(scope="module")
def talk(speech: Callable[[str], bytes]) -> Pcm:
    """600 ms silence, "i want to return my shoes", 1 s silence."""
    return _pcm_frames(speech("i want to return my shoes"))


def test_silence_never_starts_and_base_follows(talk: Pcm) -> None:
    ep = VadEndpointer()
    steps = _run(ep, _silence(100, 1))
    assert not any(s.started or s.frames for s in steps)
    assert ep.base_entry == "1-72"  # 100 frames fed, 28 (400 ms pre-roll + 160 ms window) retained
    assert ep.utterance_start is None and not ep.in_speech


def test_one_utterance_with_pre_roll_and_end_silence(talk: Pcm) -> None:
    config = EndpointerConfig(end_silence_ms=500, pre_roll_ms=300)
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


def test_rebase_then_replay_gives_the_same_steps(talk: Pcm) -> None:
    """After a rebase, a fresh endpointer fed the frames after ``base_entry`` behaves identically."""
    noise = np.random.default_rng(7).normal(0, 300, 160 * 40).astype(np.int16)
    stream = [(f"1-{k + 1}", noise[k * 160 : (k + 1) * 160].tobytes()) for k in range(40)]
    stream += [(f"1-{41 + k}", pcm) for k, (_, pcm) in enumerate(talk)]
    ep = VadEndpointer()
    _run(ep, stream[:40])
    base = ep.rebase()
    assert base is not None and base < "1-40"
    resume = [e for e, _ in stream].index(base) + 1
    replay = VadEndpointer(start_after=base)
    _run(replay, stream[resume:40])
    tail = stream[40:]
    a, b = _run(ep, tail), _run(replay, tail)
    assert [(s.started, s.ended, [f.entry_id for f in s.frames]) for s in a] == [
        (s.started, s.ended, [f.entry_id for f in s.frames]) for s in b
    ]
    assert any(s.ended for s in a)
    assert ep.base_entry == replay.base_entry


def test_rebase_during_speech_is_refused(talk: Pcm) -> None:
    ep = VadEndpointer()
    for entry_id, pcm in talk:
        if ep.process(entry_id, pcm, 0.0).started:
            break
    assert ep.in_speech and ep.rebase() is None


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
