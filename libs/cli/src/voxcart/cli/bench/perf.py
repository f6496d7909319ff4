"""Performance measurements: memory per call and text-to-speech time to first audio.

(CPU per frame and end-of-speech-to-final latency come out of decoding the clean calls, see ``decoding``.)

Invariants: memory is read from ``/proc/self/status`` (``VmRSS``), after a garbage collection; every
recognizer measured is kept open until all are measured, so each one's memory stays counted. Measure in a
fresh process: where memory was freed before, new recognizers reuse it and RSS understates their cost. Time to first
audio is wall time (``time.perf_counter``) from asking for a synthesis to holding its first chunk, after one
warm-up synthesis (the engine's one-time load is reported apart).
"""

from __future__ import annotations

import gc
import importlib
import importlib.util
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np

from voxcart.common.audio import FRAME_BYTES, SAMPLE_RATE
from voxcart.stt.recognizer import CallRecognizer, RecognizerModel, SpeechStart

__all__ = ["AGENT_PROMPTS", "memory_per_call", "piper_first_audio", "rss_mib", "summary", "tts_first_audio"]

AGENT_PROMPTS: Final = (
    "Thanks for calling. How can I help you today?",
    "Your order 10023 shipped yesterday and should arrive on Thursday.",
    "The Trail Hoodie in blue, size medium, is in stock.",
    "Sure. I can start a return for the rain jacket. Is that right?",
    "You have thirty days to return unworn items with the tags attached.",
    "Let me transfer you to a member of our team.",
    "I'm sorry, I didn't catch that. Could you say it again?",
    "Goodbye, and have a nice day.",
)
"""What the agent says: short replies, the kind whose first audio a caller waits for."""


def summary(values: Sequence[float], *, over: float | None = None) -> dict[str, float | int]:
    """``n``, ``mean``, ``median``, ``p95``, ``p99`` and ``max`` of ``values`` (linear percentiles).

    With ``over``, also ``over``: how many values exceed it (``over_limit``).
    """
    if not values:
        return {"n": 0}
    x = np.asarray(values, dtype=np.float64)
    extra = {} if over is None else {"over_limit": over, "over": int((x > over).sum())}
    return {
        **extra,
        "n": len(values),
        "mean": float(x.mean()),
        "median": float(np.percentile(x, 50)),
        "p95": float(np.percentile(x, 95)),
        "p99": float(np.percentile(x, 99)),
        "max": float(x.max()),
    }


def rss_mib(status: Path = Path("/proc/self/status")) -> float:
    """This process's resident set size (``VmRSS``) in MiB.

    Raises:
        RuntimeError: the file has no ``VmRSS`` line (not Linux).
    """
    for line in status.read_text(encoding="ascii").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{status}: no VmRSS line; memory per call needs Linux /proc")


def _feed(recognizer: CallRecognizer, ulaw: bytes, *, stop_in_speech_ms: int | None = None) -> None:
    """Feed ``ulaw``; with ``stop_in_speech_ms``, stop that long after the utterance started (left open)."""
    started: int | None = None
    for k, i in enumerate(range(0, len(ulaw), FRAME_BYTES)):
        events = recognizer.feed(f"1-{k + 1}", ulaw[i : i + FRAME_BYTES], 20.0 * k)
        if started is None and any(isinstance(e, SpeechStart) for e in events):
            started = k
        if stop_in_speech_ms is not None and started is not None and (k - started) * 20 >= stop_in_speech_ms:
            return
    if stop_in_speech_ms is not None:
        raise ValueError("memory_per_call: the speech never started an utterance")
    recognizer.end_utterance()


def _growth(open_one: Callable[[int], CallRecognizer], calls: int) -> tuple[float, list[CallRecognizer]]:
    """Mean RSS growth (MiB) per recognizer over ``calls`` recognizers opened by ``open_one`` (all kept)."""
    gc.collect()
    base = rss_mib()
    kept = [open_one(k) for k in range(calls)]
    gc.collect()
    return (rss_mib() - base) / calls, kept


def memory_per_call(model: RecognizerModel, speech: bytes, calls: int, end_silence_ms: int) -> dict[str, Any]:
    """RSS growth per additional open :class:`CallRecognizer`, idle and in mid-utterance.

    - ``per_speaking_call_mib``: each call is held in the middle of an utterance (1 s into the speech), so
      all of them decode at once: what concurrent speakers cost (decoders, search state).
    - ``per_call_mib``: each call has decoded the whole ``speech`` and waits for the next utterance: what an
      open call costs between utterances (a recognizer that shares decoders with other calls costs little
      here; one that owns a decoder per call costs a decoder).

    A warm-up call, held in mid-utterance throughout, takes the one-time loads first (VAD model, decoder
    pool); its growth is ``first_call_mib``.
    """

    def new(name: str) -> CallRecognizer:
        return CallRecognizer(model, name, end_silence_ms=end_silence_ms)

    def speaking(k: int) -> CallRecognizer:
        recognizer = new(f"CAmemspeak{k}")
        _feed(recognizer, speech, stop_in_speech_ms=1000)
        return recognizer

    def idle(k: int) -> CallRecognizer:
        recognizer = new(f"CAmemidle{k}")
        _feed(recognizer, speech)
        return recognizer

    gc.collect()
    before = rss_mib()
    warm = speaking(-1)
    gc.collect()
    first = rss_mib() - before
    per_speaking, speakers = _growth(speaking, calls)
    for recognizer in speakers:  # their decoders go back to the model's pool (if it has one) ...
        recognizer.end_utterance()
    per_idle, idlers = _growth(idle, calls)  # ... where idle calls find them
    result = {
        "calls": calls,
        "per_call_mib": per_idle,
        "per_speaking_call_mib": per_speaking,
        "first_call_mib": first,
        "rss_before_mib": before,
        "rss_after_mib": rss_mib(),
        "speech_seconds": len(speech) / SAMPLE_RATE,
    }
    for recognizer in [warm, *speakers, *idlers]:
        recognizer.end_utterance()
    return result


def _first_audio(synthesize: Any, texts: Sequence[str]) -> dict[str, Any]:
    """Warm up, then time each text: to first chunk, and whole synthesis against its audio length."""
    started = time.perf_counter()
    for _ in synthesize("Hello."):
        pass
    load = time.perf_counter() - started
    first: list[float] = []
    rtf: list[float] = []
    for text in texts:
        started = time.perf_counter()
        stream: Iterator[bytes] = iter(synthesize(text))
        chunk = next(stream, b"")
        first.append((time.perf_counter() - started) * 1000)
        audio = len(chunk) + sum(len(c) for c in stream)
        rtf.append((time.perf_counter() - started) / max(audio / SAMPLE_RATE, 1e-9))
    return {"available": True, "first_audio_ms": summary(first), "rtf": summary(rtf), "warmup_ms": load * 1000}


def tts_first_audio(texts: Sequence[str] = AGENT_PROMPTS) -> dict[str, Any]:
    """espeak-ng (:class:`voxcart.tts.synth.EspeakSynthesizer`, the agent's default voice)."""
    from voxcart.tts.synth import EspeakSynthesizer

    synthesizer = EspeakSynthesizer()
    return {"engine": "espeak-ng", **_first_audio(synthesizer.synthesize, texts)}


def piper_first_audio(texts: Sequence[str] = AGENT_PROMPTS) -> dict[str, Any]:
    """Piper through ``voxcart.tts.piper`` if that module exists, with its default (bundled) voice; else a note.

    The synthesizer comes from ``PiperSynthesizer.from_file()`` (or ``PiperSynthesizer()`` without it).
    """
    name = "voxcart.tts.piper"
    if importlib.util.find_spec(name) is None:
        return {"engine": "piper", "available": False, "note": f"{name} does not exist (no piper agent voice yet)"}
    module = importlib.import_module(name)
    synthesizer_class = getattr(module, "PiperSynthesizer", None)
    if synthesizer_class is None:
        return {"engine": "piper", "available": False, "note": f"{name} has no PiperSynthesizer"}
    factory = getattr(synthesizer_class, "from_file", synthesizer_class)  # from_file(): the bundled voice
    try:
        synthesizer = factory()
        return {"engine": "piper", **_first_audio(synthesizer.synthesize, texts)}
    except Exception as exc:  # an optional engine: report why it could not be measured
        return {"engine": "piper", "available": False, "note": f"{name}.PiperSynthesizer failed: {exc}"}
