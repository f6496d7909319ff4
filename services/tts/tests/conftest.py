"""Stream drivers for the tests of the two embedded synthesizers (espeak-ng and piper).

Both return the same :class:`~voxcart.tts.stream.SynthesisStream`, so ``test_tts_synth.py`` and
``test_tts_piper.py`` drive them the same way: cancel after some chunks, and time a whole stream.
Each fixture hands out a function, since test modules cannot import this file.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from voxcart.common.audio import SAMPLE_RATE
from voxcart.tts.stream import CancelToken, SynthesisStream

Speak = Callable[[str, CancelToken | None], SynthesisStream]
"""A synthesizer's ``synthesize``."""


@pytest.fixture(scope="session")
def cancel_after() -> Callable[[Speak, str, int], tuple[list[bytes], SynthesisStream]]:
    """``cancel_after(synth.synthesize, text, n)``: reads the stream, setting its cancel once ``n`` chunks are in
    (``n=0``: before the first ``next()``); returns the chunks it got and the stream."""

    def run(speak: Speak, text: str, n: int) -> tuple[list[bytes], SynthesisStream]:
        cancel = threading.Event()
        if n == 0:
            cancel.set()
        stream = speak(text, cancel)
        got: list[bytes] = []
        for chunk in stream:
            got.append(chunk)
            if len(got) == n:
                cancel.set()
        return got, stream

    return run


@pytest.fixture(scope="session")
def timed_stream() -> Callable[[Speak, str], tuple[SynthesisStream, list[bytes], float]]:
    """``timed_stream(synth.synthesize, text)``: reads a whole stream; returns it, its chunks and its real-time
    factor (seconds taken from the first ``next()`` per second of audio)."""

    def run(speak: Speak, text: str) -> tuple[SynthesisStream, list[bytes], float]:
        stream = speak(text, None)
        start = time.perf_counter()
        chunks = list(stream)
        return stream, chunks, (time.perf_counter() - start) / (sum(map(len, chunks)) / SAMPLE_RATE)

    return run
