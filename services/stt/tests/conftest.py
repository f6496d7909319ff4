"""Fixtures: a domain model built from a small shop corpus, and real caller speech from the piper voice.

The corpus is this file's own (the brain publishes the production one). Audio goes through the phone path:
piper 22.05 kHz -> 8 kHz -> μ-law 20 ms frames, framed by digital silence, exactly as Twilio would deliver it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import pytest

from voxcart.cli.caller_voice import synthesize_caller
from voxcart.common.audio import FRAME_BYTES, silence_ulaw
from voxcart.stt.recognizer import CallRecognizer, Catalogue, RecognizerEvent, RecognizerModel

SAMPLES = """\
where is my order
where's my order
i want to check the status of my order
has my order shipped yet
when will my package arrive
my package has not arrived
my order number is 12345
the order number is 4 8 1 5 2
i want to return my shoes
how do i return an item
can i return the jacket
i'd like a refund
i want a refund for the red jacket
what is your return policy
i want to cancel my order
please cancel the order
is the blue hoodie in stock
do you have the black hoodie in large
do you have these sneakers in size 10
is the red jacket available in small
i need to change my shipping address
can i change the delivery address
i was charged twice
you double charged my card
how long does delivery take
when will it be delivered
i want to talk to a person
can i speak to a human
let me speak to someone
yes
yes please
yeah that's right
no
no thanks
no that's wrong
goodbye
thank you goodbye
that's all thanks
medium
large
small
""".splitlines()
"""Sentences a caller might say to a clothing shop. Several test sentences below are deliberately not in it."""

EXTRA_WORDS = ["hoodie", "sneakers", "jacket", "shoes", "t-shirt", "jeans", "blue", "black", "red", "green"]

KEY_WORDS: list[tuple[str, set[str]]] = [
    ("where is my order", {"order"}),
    ("i want to return my shoes", {"return", "shoes"}),
    ("is the blue hoodie in stock in medium", {"blue", "hoodie", "stock", "medium"}),
    ("talk to a person", {"talk", "person"}),
    ("goodbye", {"goodbye"}),
    ("i want to cancel my order", {"cancel", "order"}),
    ("what is your return policy", {"return", "policy"}),
    ("do you have these sneakers in size 10", {"sneakers", "ten"}),
    ("i need to change my shipping address", {"change", "address"}),
    ("you charged me twice", {"charged", "twice"}),
    ("yes", {"yes"}),
    ("no thanks", {"no"}),
    ("i want a refund for the red jacket", {"refund", "red", "jacket"}),
    ("how long does delivery take", {"delivery"}),
    ("when will my package arrive", {"package", "arrive"}),
]
"""The test sentences and the words the brain needs from each (8 of the 15 are not literally in SAMPLES)."""

Entries = list[tuple[str, bytes, float]]
"""``(entry_id, μ-law frame, arrived_ms)`` in stream order."""


@pytest.fixture(scope="session")
def model() -> Iterator[RecognizerModel]:
    built = RecognizerModel.build(SAMPLES, EXTRA_WORDS)
    yield built
    built.close()


@pytest.fixture(scope="session")
def speech() -> Callable[[str], bytes]:
    """``speech(text)``: the caller saying ``text``, 20 ms frames, 600 ms of silence before and 1 s after."""
    cache: dict[str, bytes] = {}

    def speak(text: str) -> bytes:
        if text not in cache:
            cache[text] = synthesize_caller(text, lead_ms=600, tail_ms=1000)
        return cache[text]

    return speak


def frames(audio: bytes, first_chunk: int = 1, gen: int = 1) -> Entries:
    """Split μ-law audio into ``(entry_id, frame, arrived_ms)`` as the gateway writes them to ``audio.in``."""
    return [
        (f"{gen}-{first_chunk + k}", audio[i : i + FRAME_BYTES], 1_000_000.0 + 20.0 * (first_chunk + k))
        for k, i in enumerate(range(0, len(audio), FRAME_BYTES))
    ]


def feed_all(recognizer: CallRecognizer, entries: Entries) -> list[RecognizerEvent]:
    """Feed entries in order; all events, in order."""
    events: list[RecognizerEvent] = []
    for entry_id, frame, arrived in entries:
        events += recognizer.feed(entry_id, frame, arrived)
    return events


@pytest.fixture(scope="session")
def to_entries() -> Callable[..., Entries]:
    """``to_entries(audio, first_chunk=1, gen=1)``: see :func:`frames`."""
    return frames


@pytest.fixture(scope="session")
def run() -> Callable[[CallRecognizer, Entries], list[RecognizerEvent]]:
    """``run(recognizer, entries)``: see :func:`feed_all`."""
    return feed_all


@pytest.fixture(scope="session")
def key_words() -> list[tuple[str, set[str]]]:
    return KEY_WORDS


CATALOGUE = Catalogue(
    names=("hoodie", "sneakers", "jacket", "shoes", "t-shirt", "jeans"),
    colors=("blue", "black", "red", "green"),
    sizes=("small", "medium", "large", "nine", "ten"),
)
"""The product answers' vocabulary of this file's shop (names, colours, sizes of EXTRA_WORDS and SAMPLES)."""


@pytest.fixture(scope="session")
def shop_model() -> Iterator[RecognizerModel]:
    """Like ``model``, with the shop's catalogue: ``listen("product")`` decodes with a product grammar too."""
    built = RecognizerModel.build(SAMPLES, EXTRA_WORDS, catalogue=CATALOGUE)
    yield built
    built.close()


@pytest.fixture(scope="session")
def paused_speech() -> Callable[[Sequence[str], int], bytes]:
    """``paused_speech(groups, pause_ms)``: the caller saying ``groups`` one after the other, with pauses."""
    cache: dict[tuple[tuple[str, ...], int], bytes] = {}

    def speak(groups: Sequence[str], pause_ms: int) -> bytes:
        key = (tuple(groups), pause_ms)
        if key not in cache:
            pause = silence_ulaw(pause_ms // 20 * FRAME_BYTES)
            cache[key] = silence_ulaw(30 * FRAME_BYTES) + pause.join(synthesize_caller(g) for g in groups)
            cache[key] += silence_ulaw(75 * FRAME_BYTES)
        return cache[key]

    return speak
