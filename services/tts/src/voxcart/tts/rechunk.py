"""Raw μ-law in arbitrary pieces (as a network stream delivers it) out as whole 20 ms frame chunks.

Invariants: every chunk is a whole number of 20 ms frames; the first is yielded as soon as one frame is there
(at most ``chunk_bytes``), every later one is exactly ``chunk_bytes`` except the last, which :meth:`Rechunker.finish`
pads with μ-law silence to a whole frame. No byte is dropped or reordered.
"""

from __future__ import annotations

from voxcart.common.audio import FRAME_BYTES, silence_ulaw

__all__ = ["Rechunker"]


class Rechunker:
    """Raw μ-law in, whole-frame chunks out: the first as soon as it has a frame, then ``chunk_bytes`` each."""

    def __init__(self, chunk_bytes: int) -> None:
        self._chunk = chunk_bytes
        self._buf = bytearray()
        self._first = True

    def push(self, data: bytes) -> list[bytes]:
        """Add ``data``; returns the chunks now complete (possibly none)."""
        self._buf += data
        out: list[bytes] = []
        if self._first:
            n = min(len(self._buf) - len(self._buf) % FRAME_BYTES, self._chunk)
            if n == 0:
                return out
            out.append(self._take(n))
            self._first = False
        while len(self._buf) >= self._chunk:
            out.append(self._take(self._chunk))
        return out

    def finish(self) -> list[bytes]:
        """End of input: returns what is left, the last chunk padded with silence to a whole frame."""
        if len(self._buf) % FRAME_BYTES:
            self._buf += silence_ulaw(FRAME_BYTES - len(self._buf) % FRAME_BYTES)
        out: list[bytes] = []
        while self._buf:
            out.append(self._take(min(self._chunk, len(self._buf))))
        return out

    def _take(self, n: int) -> bytes:
        chunk = bytes(self._buf[:n])
        del self._buf[:n]
        return chunk
