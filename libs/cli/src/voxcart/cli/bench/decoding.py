"""Running audio through the recognizers, in this process or in a pool of worker processes.

Two setups are measured:

- **domain**: the production path, :class:`voxcart.stt.recognizer.CallRecognizer` on a
  :class:`~voxcart.stt.recognizer.RecognizerModel` built from the brain's sample sentences and vocabulary,
  fed 20 ms μ-law frames like the stt worker (endpointer, pre-roll, cepstral mean carried over the call);
- **generic**: PocketSphinx's own en-us LM and full 134k-word dictionary (``Decoder()`` with the default
  model), fed each prompt whole, upsampled to 16 kHz the same way.

Only the recognizer's stable API is used (``RecognizerModel.build``, ``CallRecognizer(model, sid,
end_silence_ms=...)``, ``feed``, ``end_utterance``, ``Final`` fields, ``listen``), so the bench keeps working
while the recognizer's internals change.

Invariants: a task's result depends only on the task (each task opens its own recognizer, i.e. is one call);
worker processes are started with ``spawn`` (never ``fork``: the parent runs onnxruntime threads) and build
their own model from the same sentences, which gives the same LM as the parent's (the build is deterministic).
"""

from __future__ import annotations

import importlib.util
import logging
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from pocketsphinx import Decoder

import voxcart.stt.recognizer as recognizer_module
from voxcart.common.audio import FRAME_BYTES, SAMPLE_RATE, Resampler, pcm16_to_ulaw, ulaw_to_pcm16
from voxcart.stt.recognizer import CallRecognizer, RecognizerModel
from voxcart.stt.recognizer import Final as FinalEvent

from .asterisk import read_wav
from .perf import memory_per_call

__all__ = [
    "CallResult",
    "CallTask",
    "PromptResult",
    "PromptTask",
    "assign_finals",
    "decode_call",
    "generic_decoder",
    "init_worker",
    "numbers_grammar",
    "phone_path",
    "recognizer_min_confidence",
    "run_call_task",
    "run_memory_task",
    "run_prompt_task",
]

Int16Array = npt.NDArray[np.int16]

T0_MS: Final = 1_000_000.0
"""Arrival time (ms) of a stream's first frame; frame ``k`` arrives ``20 k`` ms later."""
PAD_LEAD_S: Final = 0.6
PAD_TAIL_S: Final = 1.0
PAD_NOISE_RMS: Final = 16.0
"""Line hiss (about -66 dBFS) in the padding around a recorded prompt; PocketSphinx needs non-speech around an
utterance (speech.md §1), and a real line is never digitally silent."""


@dataclass(frozen=True, slots=True)
class CallTask:
    """One simulated call: caller sentences in one μ-law stream, and where each sentence's speech is.

    Attributes:
        condition: the noise condition (``clean``, ``snr20`` ...).
        call: the call's number within the condition.
        ulaw: the whole stream, 8 kHz μ-law, whole 20 ms frames.
        spans: per sentence, the arrival times (ms) of its first and last active frame.
        end_silence_ms: the recognizer's end-of-speech silence.
    """

    condition: str
    call: int
    ulaw: bytes
    spans: tuple[tuple[float, float], ...]
    end_silence_ms: int


@dataclass(slots=True)
class CallResult:
    """What the recognizer made of a :class:`CallTask`.

    Attributes:
        texts: per sentence, the text of the finals that overlap it (joined in time order).
        confidences: per sentence, the mean confidence of those finals (None: no final).
        spurious: texts of finals that overlap no sentence (noise taken for speech).
        merged: finals that overlap more than one sentence (the endpointer missed a pause).
        finals: all finals.
        latencies_ms: per final ended by the endpointer, ``recognized_at - endpointed_at``.
        frame_cpu_s: CPU seconds of each ``feed`` call (only when timed).
        cpu_s: CPU seconds of the whole call.
        audio_s: seconds of audio in the stream.
    """

    condition: str
    call: int
    texts: list[str]
    confidences: list[float | None] = field(default_factory=list)
    spurious: list[str] = field(default_factory=list)
    merged: int = 0
    finals: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    frame_cpu_s: list[float] = field(default_factory=list)
    cpu_s: float = 0.0
    audio_s: float = 0.0


@dataclass(frozen=True, slots=True)
class PromptTask:
    """Recorded prompts to decode as one call, with the setups to decode them with.

    Attributes:
        chunk: the task's number.
        prompts: ``(key, wav path)`` pairs.
        setups: any of ``generic``, ``domain``, ``grammar`` (domain model after ``listen("digits")``).
        end_silence_ms: the recognizer's end-of-speech silence.
    """

    chunk: int
    prompts: tuple[tuple[str, str], ...]
    setups: tuple[str, ...]
    end_silence_ms: int


@dataclass(frozen=True, slots=True)
class PromptResult:
    """One prompt's transcripts by setup, its duration, and the CPU each setup spent on it."""

    key: str
    seconds: float
    texts: dict[str, str]
    cpu_s: dict[str, float]


def frames_of(ulaw: bytes) -> list[bytes]:
    """``ulaw`` cut into 20 ms frames (its length must be a multiple of 160 bytes)."""
    if len(ulaw) % FRAME_BYTES:
        raise ValueError(f"frames_of: {len(ulaw)} bytes is not a whole number of 20 ms frames")
    return [ulaw[i : i + FRAME_BYTES] for i in range(0, len(ulaw), FRAME_BYTES)]


def _overlap(a: tuple[float, float], b: tuple[float, float]) -> float:
    return max(0.0, min(a[1], b[1]) - max(a[0], b[0]))


def assign_finals(
    finals: Sequence[tuple[float, float]], spans: Sequence[tuple[float, float]]
) -> tuple[list[list[int]], list[int], int]:
    """Attribute finals to the sentences they overlap.

    Args:
        finals: each final's ``(first_voiced_ms, last_voiced_ms)``, in time order.
        spans: each sentence's ``(first, last)`` active frame arrival (ms).

    Returns:
        ``(by_sentence, spurious, merged)``: per sentence, the indexes of the finals that overlap it more than
        any other sentence; the indexes of finals overlapping no sentence; how many finals overlapped more
        than one sentence.
    """
    by_sentence: list[list[int]] = [[] for _ in spans]
    spurious: list[int] = []
    merged = 0
    for n, (first, last) in enumerate(finals):
        interval = (first, last + 20.0)
        overlaps = [_overlap(interval, (s, e + 20.0)) for s, e in spans]
        hit = [o for o in overlaps if o > 0]
        if not hit:
            spurious.append(n)
            continue
        merged += len(hit) > 1
        by_sentence[int(np.argmax(overlaps))].append(n)
    return by_sentence, spurious, merged


def decode_call(model: RecognizerModel, task: CallTask, *, timed: bool = False) -> CallResult:
    """Feed a call's stream to a new :class:`CallRecognizer` and attribute its finals to the sentences.

    Args:
        model: the domain model.
        task: the call.
        timed: record the CPU time of every ``feed`` (``time.process_time``) in ``frame_cpu_s``.
    """
    recognizer = CallRecognizer(model, f"CAbench{task.condition}{task.call}", end_silence_ms=task.end_silence_ms)
    finals: list[FinalEvent] = []
    frame_cpu: list[float] = []
    started = time.process_time()
    for k, frame in enumerate(frames_of(task.ulaw)):
        if timed:
            before = time.process_time()
            events = recognizer.feed(f"1-{k + 1}", frame, T0_MS + 20.0 * k)
            frame_cpu.append(time.process_time() - before)
        else:
            events = recognizer.feed(f"1-{k + 1}", frame, T0_MS + 20.0 * k)
        finals += [e for e in events if isinstance(e, FinalEvent)]
    latencies = [f.recognized_at - f.endpointed_at for f in finals]
    finals += [e for e in recognizer.end_utterance() if isinstance(e, FinalEvent)]
    cpu = time.process_time() - started
    by_sentence, spurious, merged = assign_finals(
        [(f.first_voiced_arrived, f.last_voiced_arrived) for f in finals], task.spans
    )
    return CallResult(
        condition=task.condition,
        call=task.call,
        texts=[" ".join(finals[n].text for n in ns) for ns in by_sentence],
        confidences=[float(np.mean([finals[n].confidence for n in ns])) if ns else None for ns in by_sentence],
        spurious=[finals[n].text for n in spurious],
        merged=merged,
        finals=len(finals),
        latencies_ms=latencies,
        frame_cpu_s=frame_cpu,
        cpu_s=cpu,
        audio_s=len(task.ulaw) / SAMPLE_RATE,
    )


def generic_decoder() -> Any:
    """PocketSphinx with its default en-us model, LM and full dictionary, at 16 kHz (about 95 MB)."""
    decoder = Decoder(samprate=16000, loglevel="FATAL")
    cmn = getattr(recognizer_module, "TELEPHONE_CMN", None)
    if isinstance(cmn, str):  # the same telephone prior the domain recognizer starts a call from
        decoder.set_cmn(cmn)
    return decoder


def decode_generic(decoder: Any, pcm8k: Int16Array) -> str:
    """One utterance, whole, through the generic decoder (8 kHz upsampled to 16 kHz like the recognizer)."""
    pcm16k = Resampler(SAMPLE_RATE, 16000).process(pcm8k, last=True)
    decoder.start_utt()
    decoder.process_raw(pcm16k.tobytes(), False, True)
    decoder.end_utt()
    hyp = decoder.hyp()
    return " ".join(str(hyp.hypstr).split()) if hyp is not None else ""


def phone_path(pcm8k: Int16Array, seed: int) -> bytes:
    """A recorded prompt as a caller's line delivers it: line hiss around it, μ-law, whole 20 ms frames."""
    rng = np.random.default_rng(seed)
    lead = int(PAD_LEAD_S * SAMPLE_RATE)
    tail = int(PAD_TAIL_S * SAMPLE_RATE) + (-(lead + len(pcm8k) + int(PAD_TAIL_S * SAMPLE_RATE)) % FRAME_BYTES)
    hiss = np.round(rng.normal(0.0, PAD_NOISE_RMS, lead + tail)).astype(np.int16)
    return pcm16_to_ulaw(np.concatenate([hiss[:lead], pcm8k.astype(np.int16), hiss[lead:]]))


def numbers_grammar() -> str | None:
    """The numbers grammar the recognizer names, or None.

    Looked for by name: a ``voxcart.stt.grammar``/``grammars`` module, or a grammar/JSGF name in the recognizer
    module. ``listen`` exists either way and is a no-op without a grammar, so the bench also checks whether
    ``listen("digits")`` changes any transcript.
    """
    found = [m for m in ("voxcart.stt.grammar", "voxcart.stt.grammars") if importlib.util.find_spec(m) is not None]
    found += [
        f"voxcart.stt.recognizer.{name}"
        for name in dir(recognizer_module)
        if "grammar" in name.lower() or "jsgf" in name.lower()
    ]
    return found[0] if found else None


def recognizer_min_confidence() -> float | None:
    """The confidence below which the recognizer says a final is not understood (``MIN_CONFIDENCE``), if any."""
    value = getattr(recognizer_module, "MIN_CONFIDENCE", None)
    return float(value) if isinstance(value, (int, float)) else None


# -- worker processes ---------------------------------------------------------------------------------------

_model: RecognizerModel | None = None
_generic: Any = None


def init_worker(samples: Sequence[str], words: Sequence[str]) -> None:
    """Pool initializer: build this process's domain model (the generic decoder is made on first use)."""
    global _model
    logging.getLogger("voxcart").setLevel(logging.ERROR)
    _model = RecognizerModel.build(samples, words)


def _worker_model() -> RecognizerModel:
    if _model is None:
        raise RuntimeError("bench worker: init_worker() was not called in this process")
    return _model


def run_call_task(task: CallTask) -> CallResult:
    """Pool task: :func:`decode_call` on this process's model."""
    return decode_call(_worker_model(), task)


def run_memory_task(speech: bytes, calls: int, end_silence_ms: int) -> dict[str, Any]:
    """Pool task: :func:`~voxcart.cli.bench.perf.memory_per_call` in this (fresh) worker process.

    Submitted first, so it runs in a process whose heap holds only the model: in a process that has freed
    memory before (the bench's own, a test runner's), new decoders reuse it and RSS does not grow.
    """
    return memory_per_call(_worker_model(), speech, calls, end_silence_ms)


def run_prompt_task(task: PromptTask) -> list[PromptResult]:
    """Pool task: decode recorded prompts with each requested setup (one call per setup)."""
    global _generic
    model = _worker_model()
    audio = [(key, read_wav(Path(path))) for key, path in task.prompts]
    streams = [phone_path(pcm, zlib.crc32(key.encode())) for key, pcm in audio]
    texts: dict[str, dict[str, str]] = {key: {} for key, _ in audio}
    cpu: dict[str, dict[str, float]] = {key: {} for key, _ in audio}
    for setup in task.setups:
        if setup == "generic":
            if _generic is None:
                _generic = generic_decoder()
            for (key, _), stream in zip(audio, streams, strict=True):
                started = time.process_time()
                texts[key][setup] = decode_generic(_generic, ulaw_to_pcm16(stream))
                cpu[key][setup] = time.process_time() - started
            continue
        if setup not in ("domain", "grammar"):
            raise ValueError(f"run_prompt_task: unknown setup {setup!r}")
        recognizer = CallRecognizer(model, f"CAprompts{task.chunk}{setup}", end_silence_ms=task.end_silence_ms)
        k = 0
        for (key, _), stream in zip(audio, streams, strict=True):
            if setup == "grammar":
                recognizer.listen("digits")
            started = time.process_time()
            finals: list[str] = []
            for frame in frames_of(stream):
                k += 1
                events = recognizer.feed(f"1-{k}", frame, T0_MS + 20.0 * k)
                finals += [e.text for e in events if isinstance(e, FinalEvent)]
            finals += [e.text for e in recognizer.end_utterance() if isinstance(e, FinalEvent)]
            texts[key][setup] = " ".join(finals)
            cpu[key][setup] = time.process_time() - started
    return [PromptResult(key, len(pcm) / SAMPLE_RATE, texts[key], cpu[key]) for key, pcm in audio]
