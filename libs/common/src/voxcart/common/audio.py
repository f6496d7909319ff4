"""Telephone audio: G.711 μ-law <-> 16-bit PCM, and stateful sample-rate conversion.

Twilio speaks 8 kHz μ-law in 20 ms frames (160 bytes). The μ-law tables are bit-exact with the stdlib's
``audioop.lin2ulaw``/``ulaw2lin`` (checked over every int16 value in the tests); ``audioop`` itself is
deprecated and gone in Python 3.13, so it is not used. Resamplers keep state between calls (soxr's streaming
resampler), so frame-by-frame conversion has no edge artifacts.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import soxr

__all__ = [
    "FRAME_BYTES",
    "FRAME_MS",
    "SAMPLE_RATE",
    "Resampler",
    "pcm16_to_ulaw",
    "silence_ulaw",
    "ulaw_to_pcm16",
    "ulaw_rms",
]

SAMPLE_RATE = 8000
"""Twilio's sample rate (Hz)."""
FRAME_MS = 20
FRAME_BYTES = SAMPLE_RATE * FRAME_MS // 1000
"""μ-law bytes in one 20 ms frame (one byte per sample)."""

Int16Array = npt.NDArray[np.int16]


def _build_tables() -> tuple[npt.NDArray[np.uint8], Int16Array]:
    x = np.arange(-32768, 32768, dtype=np.int32) >> 2
    neg = x < 0
    v = np.minimum(np.where(neg, -x, x), 8159) + 33
    seg = np.searchsorted(np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF]), v)
    enc = (np.where(seg >= 8, 0x7F, (seg << 4) | ((v >> (seg + 1)) & 0xF)) ^ np.where(neg, 0x7F, 0xFF)).astype(np.uint8)
    u = ~np.arange(256) & 0xFF
    m = ((((u & 0xF) << 3) + 0x84) << ((u >> 4) & 7)) - 0x84
    dec = np.where(u & 0x80, -m, m).astype(np.int16)
    return enc, dec


_ENC, _DEC = _build_tables()
_SILENCE = bytes([0xFF])


def ulaw_to_pcm16(data: bytes) -> Int16Array:
    """Decode μ-law bytes to int16 samples."""
    return _DEC[np.frombuffer(data, dtype=np.uint8)]


def ulaw_pcm_frames(ulaw: bytes) -> list[bytes]:
    """μ-law 8 kHz (a whole number of 20 ms frames) as 20 ms frames of int16 little-endian PCM (320 bytes each).

    Raises:
        ValueError: ``ulaw`` is empty or not a multiple of 160 bytes (callers add where it came from).
    """
    if not ulaw or len(ulaw) % FRAME_BYTES:
        raise ValueError(f"{len(ulaw)} bytes of μ-law, expected a non-zero multiple of {FRAME_BYTES}")
    pcm = ulaw_to_pcm16(ulaw)
    return [pcm[i : i + FRAME_BYTES].tobytes() for i in range(0, len(pcm), FRAME_BYTES)]


def pcm16_to_ulaw(samples: npt.NDArray[np.int16]) -> bytes:
    """Encode int16 samples to μ-law bytes."""
    return _ENC[samples.astype(np.int32) + 32768].tobytes()


def silence_ulaw(n_bytes: int = FRAME_BYTES) -> bytes:
    """μ-law digital silence (0xFF decodes to 0)."""
    return _SILENCE * n_bytes


def ulaw_rms(data: bytes) -> float:
    """Root-mean-square level of μ-law audio in int16 units."""
    if not data:
        return 0.0
    pcm = ulaw_to_pcm16(data).astype(np.float64)
    return float(np.sqrt(np.mean(pcm * pcm)))


class Resampler:
    """A streaming int16 resampler that keeps its filter state between calls.

    Args:
        in_rate: input sample rate in Hz.
        out_rate: output sample rate in Hz.
        quality: soxr quality. ``"QQ"`` (cubic, the default) has no block delay, so every 20 ms frame in gives
            its samples out at once: what a live stream needs. ``"HQ"`` buffers over 100 ms of input before its
            first output; use it only where a whole block is flushed with ``last=True`` (a synthesized sentence).
    """

    def __init__(self, in_rate: int, out_rate: int, quality: str = "QQ") -> None:
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._stream = soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality=quality)

    def process(self, samples: Int16Array, last: bool = False) -> Int16Array:
        """Resample the next block; pass ``last=True`` on the final block to flush the filter."""
        out: Int16Array = self._stream.resample_chunk(samples, last=last)
        return out
