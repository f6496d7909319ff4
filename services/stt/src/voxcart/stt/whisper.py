"""The faster-whisper provider (``STT_PROVIDER=whisper``): Whisper on a local CTranslate2 model folder.

No model can be downloaded here (speech.md §4): a user copies a model folder in by hand and points
``STT_MODEL_PATH`` at it. Checking and loading that folder (:func:`check_model_dir`, the lazy faster-whisper import,
the opt-in extra ``voxcart-stt[whisper]``) live in :mod:`voxcart.stt.whisper_model`; their names are re-exported
here. This module holds the per-call recognizer and the provider.

Whisper is not a streaming recognizer, so the call is segmented here: the endpointer
(:class:`~voxcart.stt.endpointer.VadEndpointer`) finds each utterance, pre-roll included, and on its end the
utterance's audio, upsampled from 8 kHz to 16 kHz float32, is transcribed once on a worker thread. There are no
:class:`~voxcart.stt.results.Partial` results: a partial would cost a full encoder pass over a 30 s window every
few hundred ms, which two cores cannot spare.

Invariants:
- ``utterance_id = <call_sid>:<entry id of the utterance's first frame, pre-roll included>``.
- An utterance's text depends only on its own frames, the model and the keyterms of the last
  :meth:`~WhisperCallStt.listen` before it started: decoding is beam search at temperature 0 (no sampling
  fallback), without the previous utterance's text as prompt. So a fresh :class:`WhisperCallStt` fed the entries
  after a final's ``checkpoint_entry`` reproduces the same ids and texts; there is no state to resume
  (``resume`` is ``""``).
- Noise the model hears as no speech (every segment over the no-speech threshold, or no words) yields
  :class:`~voxcart.stt.results.Discarded`, never an empty :class:`~voxcart.stt.results.Final`.
- One model per worker, shared by all its calls: CTranslate2 models accept concurrent calls from several threads
  (they queue for the model's ``num_workers`` replicas), and faster-whisper's ``transcribe`` keeps its state local.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt

from voxcart.common.audio import Resampler, ulaw_pcm_frames
from voxcart.common.events import Expect, now_ms

from .endpointer import EndpointerConfig, Frame, VadEndpointer
from .provider import ProviderError
from .results import Discarded, Final, RecognizerEvent, SpeechStart
from .whisper_model import REQUIRED_FILES, TranscribeModel, WhisperSegment, check_model_dir, load_model

__all__ = [
    "REQUIRED_FILES",
    "TranscribeModel",
    "WhisperCallStt",
    "WhisperProvider",
    "WhisperSegment",
    "check_model_dir",
    "normalize_text",
]

_SAMPLE_RATE = 16000

_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}\b)")
_WORD = re.compile(r"[^\W\d_]+(?:['-][^\W\d_]+)*|\d+(?:st|nd|rd|th)?")


def normalize_text(text: str) -> str:
    """Whisper's text as a transcript: lower case, punctuation dropped, digits kept as the model wrote them.

    ``"Yes, it's order #12,345-B."`` gives ``"yes it's order 12345 b"``.
    """
    text = _THOUSANDS.sub("", text.lower().replace("\u2019", "'").replace("&", " and "))
    return " ".join(_WORD.findall(text))


@dataclass(frozen=True)
class _Decoding:
    """How every utterance is transcribed."""

    beam_size: int
    no_speech_threshold: float


@dataclass(slots=True)
class _Utterance:
    id: str
    first_voiced: Frame
    hotwords: str | None
    pcm: list[bytes] = field(default_factory=list)


class WhisperCallStt:
    """One call on faster-whisper (see :class:`~voxcart.stt.provider.CallStt`).

    Emits :class:`SpeechStart` on onset and one :class:`Final` or :class:`Discarded` per utterance, never a
    ``Partial``. The :meth:`feed` that ends an utterance returns after its transcription (run on a thread).

    Args:
        model: the worker's shared model.
        call_sid: the call, used in utterance ids.
        endpointer: the endpointing knobs (``end_silence_ms`` included).
        start_after: the checkpoint entry the entries are replayed after (``"0-0"``: the stream's start).
        beam_size: beam width (1 is greedy).
        no_speech_threshold: a segment whose ``no_speech_prob`` is above this holds no words.
        clock: wall clock in epoch ms, for ``endpointed_at``/``recognized_at``.

    Raises:
        ValueError: ``call_sid`` is empty or a knob is out of range.
    """

    provider = "whisper"

    def __init__(
        self,
        model: TranscribeModel,
        call_sid: str,
        *,
        endpointer: EndpointerConfig | None = None,
        start_after: str = "0-0",
        beam_size: int = 2,
        no_speech_threshold: float = 0.6,
        clock: Callable[[], float] = now_ms,
    ) -> None:
        if not call_sid:
            raise ValueError("WhisperCallStt: call_sid is empty")
        if not 1 <= beam_size <= 10:
            raise ValueError(f"WhisperCallStt: beam_size {beam_size} is not within 1..10")
        if not 0.0 <= no_speech_threshold <= 1.0:
            raise ValueError(f"WhisperCallStt: no_speech_threshold {no_speech_threshold} is not within 0..1")
        self.model = model
        self.call_sid = call_sid
        self._decoding = _Decoding(beam_size, no_speech_threshold)
        self._clock = clock
        self._endpointer = VadEndpointer(endpointer, start_after=start_after)
        self._utt: _Utterance | None = None
        self._hotwords: str | None = None

    async def feed(self, entry_id: str, ulaw: bytes, arrived: float) -> list[RecognizerEvent]:
        """Take the next entry (one or two 20 ms μ-law frames) and return the events it caused, in order.

        Raises:
            ValueError: ``ulaw`` is not a non-zero multiple of 160 bytes.
            ProviderError: the model failed on the utterance this entry ended.
        """
        events: list[RecognizerEvent] = []
        ep = self._endpointer
        try:
            frames = ulaw_pcm_frames(ulaw)
        except ValueError as exc:  # the location is formatted only when needed, not for every frame
            raise ValueError(f"WhisperCallStt.feed: entry {entry_id} of call {self.call_sid}: {exc}") from None
        for pcm in frames:
            step = ep.process(entry_id, pcm, arrived)
            if not step.frames:
                continue
            if step.started:
                assert ep.first_voiced is not None
                self._utt = _Utterance(f"{self.call_sid}:{step.frames[0].entry_id}", ep.first_voiced, self._hotwords)
                events.append(SpeechStart(self._utt.id, ep.first_voiced.arrived))
            assert self._utt is not None
            self._utt.pcm.extend(f.pcm for f in step.frames)
            if step.ended:
                events.append(await self._finish(entry_id))
        return events

    def listen(self, expect: Expect, keyterms: Sequence[str] = ()) -> None:
        """What the caller is expected to say next: ``keyterms`` become the next utterance's ``hotwords``.

        ``expect`` is not used: Whisper has no grammar to switch to, and the keyterms already carry the hint.
        """
        terms = [" ".join(t.split()) for t in keyterms if t.strip()]
        self._hotwords = ", ".join(terms) or None

    async def end_utterance(self) -> list[RecognizerEvent]:
        """Close the utterance in progress now (call end, drain): its final, or nothing if none is open."""
        if self._utt is None:
            return []
        self._endpointer.end()
        return [await self._finish(self._endpointer.last_entry)]

    def checkpoint(self) -> str | None:
        """Between utterances: the entry a fresh recognizer replays after; ``None`` during an utterance.

        This rebases the endpointer (:meth:`VadEndpointer.rebase`), so call it only when you commit the result.
        """
        return self._endpointer.rebase()

    @property
    def resume(self) -> str:
        """Always ``""``: an utterance's text depends on nothing carried from the ones before."""
        return ""

    def utterance_start_entry(self) -> str | None:
        """The first entry of the utterance in progress, ``None`` between utterances."""
        return self._endpointer.utterance_start

    async def aclose(self) -> None:
        """Drop the utterance in progress (the shared model stays with the provider). Idempotent."""
        self._utt = None

    async def _finish(self, last_entry: str) -> RecognizerEvent:
        """Transcribe the utterance the endpointer has just ended (and rebased)."""
        endpointed_at = self._clock()
        utt, self._utt = self._utt, None
        assert utt is not None
        checkpoint = self._endpointer.base_entry
        last_voiced = self._endpointer.last_voiced or utt.first_voiced
        audio = _to_16k_float(utt.pcm)
        text, confidence = await asyncio.to_thread(self._transcribe, utt, audio)
        if not text:
            return Discarded(utt.id, last_entry, checkpoint, "")
        return Final(
            utterance_id=utt.id,
            text=text,
            confidence=confidence,
            first_voiced_arrived=utt.first_voiced.arrived,
            last_voiced_arrived=last_voiced.arrived,
            endpointed_at=endpointed_at,
            recognized_at=self._clock(),
            last_entry_id=last_entry,
            checkpoint_entry=checkpoint,
            resume="",
        )

    def _transcribe(self, utt: _Utterance, audio: npt.NDArray[np.float32]) -> tuple[str, float]:
        """Run the model (on a worker thread): the normalized text ("" for no speech) and its confidence."""
        decoding = self._decoding
        try:
            segments, _info = self.model.transcribe(
                audio,
                language="en",
                beam_size=decoding.beam_size,
                temperature=0.0,
                vad_filter=False,
                without_timestamps=True,
                condition_on_previous_text=False,
                hotwords=utt.hotwords,
            )
            heard = [
                (normalize_text(s.text), float(s.avg_logprob))
                for s in segments
                if float(s.no_speech_prob) <= decoding.no_speech_threshold
            ]
        except Exception as e:  # any engine failure hands the call to the worker's fallback
            raise ProviderError(
                f"whisper: call {self.call_sid}, utterance {utt.id} ({len(audio) / _SAMPLE_RATE:.2f} s): "
                f"transcription failed: {type(e).__name__}: {e}"
            ) from e
        heard = [(text, logprob) for text, logprob in heard if text]
        if not heard:
            return "", 0.0
        mean_logprob = sum(logprob for _, logprob in heard) / len(heard)
        confidence = min(1.0, max(0.0, math.exp(mean_logprob))) if math.isfinite(mean_logprob) else 0.0
        return " ".join(text for text, _ in heard), confidence


def _to_16k_float(chunks: Sequence[bytes]) -> npt.NDArray[np.float32]:
    """8 kHz int16 frames -> 16 kHz float32 in [-1, 1), exactly twice as many samples."""
    samples = np.frombuffer(b"".join(chunks), dtype=np.int16)
    upsampled = Resampler(8000, _SAMPLE_RATE, quality="HQ").process(samples, last=True)
    audio: npt.NDArray[np.float32] = upsampled.astype(np.float32) / np.float32(32768.0)
    return audio


class WhisperProvider:
    """Opens :class:`WhisperCallStt` s on one shared faster-whisper model (build it with :meth:`load`).

    Args:
        model: the loaded model.
        end_silence_ms: silence that ends an utterance (overrides ``endpointer_config.end_silence_ms``).
        endpointer_config: the other endpointing knobs.
        beam_size: beam width for every utterance (1 is greedy; small keeps a 2-core machine responsive).
        no_speech_threshold: a segment whose ``no_speech_prob`` is above this holds no words.
    """

    name = "whisper"

    def __init__(
        self,
        model: TranscribeModel,
        *,
        end_silence_ms: int,
        endpointer_config: EndpointerConfig | None = None,
        beam_size: int = 2,
        no_speech_threshold: float = 0.6,
    ) -> None:
        self.model = model
        self.endpointer_config = replace(endpointer_config or EndpointerConfig(), end_silence_ms=end_silence_ms)
        self.beam_size = beam_size
        self.no_speech_threshold = no_speech_threshold

    @classmethod
    def load(
        cls,
        model_path: str | os.PathLike[str],
        *,
        end_silence_ms: int,
        endpointer_config: EndpointerConfig | None = None,
        model_factory: Callable[[Path], TranscribeModel] | None = None,
        cpu_threads: int | None = None,
        num_workers: int = 1,
        beam_size: int = 2,
        no_speech_threshold: float = 0.6,
    ) -> WhisperProvider:
        """Check the model folder and load the model once, for every call of this worker.

        The default loads ``WhisperModel(path, device="cpu", compute_type="int8", local_files_only=True)``.
        ``cpu_threads`` (default: the usable cores, at most 4) run one transcription; ``num_workers`` model
        replicas run that many at once, each holding its own copy of the weights. On a 2-core machine one
        replica with 2 threads is best: concurrent calls queue, and each utterance gets both cores.

        Args:
            model_path: ``STT_MODEL_PATH``.
            end_silence_ms: ``STT_END_SILENCE_MS``.
            endpointer_config: the other endpointing knobs.
            model_factory: builds the model from the checked folder instead of faster-whisper (tests).
            cpu_threads: CTranslate2 intra-op threads per replica.
            num_workers: CTranslate2 model replicas.
            beam_size: see :class:`WhisperProvider`.
            no_speech_threshold: see :class:`WhisperProvider`.

        Raises:
            ProviderError: the folder is unusable, faster-whisper is not installed, or the model fails to load.
        """
        if (cpu_threads is not None and cpu_threads < 1) or num_workers < 1:
            raise ProviderError(
                f"WhisperProvider.load: cpu_threads {cpu_threads} and num_workers {num_workers} must be >= 1"
            )
        model = load_model(model_path, model_factory=model_factory, cpu_threads=cpu_threads, num_workers=num_workers)
        return cls(
            model,
            end_silence_ms=end_silence_ms,
            endpointer_config=endpointer_config,
            beam_size=beam_size,
            no_speech_threshold=no_speech_threshold,
        )

    def open_call(self, call_sid: str, *, start_after: str = "0-0", resume: str = "") -> WhisperCallStt:
        """A recognizer for one call; ``resume`` is ignored (Whisper keeps no state between utterances)."""
        return WhisperCallStt(
            self.model,
            call_sid,
            endpointer=self.endpointer_config,
            start_after=start_after,
            beam_size=self.beam_size,
            no_speech_threshold=self.no_speech_threshold,
        )

    async def aclose(self) -> None:
        """Nothing to release explicitly: the model is freed with the last call that holds it."""
