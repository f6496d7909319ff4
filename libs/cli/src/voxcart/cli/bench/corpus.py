"""The in-domain test sentences: what callers of the demo store say, labelled with the job and the intent.

Most sentences are **held out**: phrasings written for this bench, not copied from the brain's sample sentences
(:func:`voxcart.brain.language.sample_utterances`) that the domain language model is built from, so the bench
measures how the recognizer does on what callers really say rather than on its own training text. A few are
**verbatim** template phrasings (with the demo store's real order numbers and products filled in), to show the
gap. The brain's samples evolve, so the report counts held-out and verbatim with :func:`in_samples` against the
samples of the run, not with the ``verbatim`` labels.

Labels: ``intent`` is what the brain's classifier should return (an intent of :mod:`voxcart.brain.nlu`), or
``"yes"``/``"no"`` for confirmations (judged with :func:`voxcart.brain.nlu.yes_or_no`), or ``None`` where the
brain has no intent for the job (changing an address): such sentences count for WER, not for intent accuracy.
Order numbers are written as the caller says them (digit by digit, sometimes "oh" for zero) and kept as
digits in ``order``.

Invariants: :func:`in_domain_sentences` is deterministic; every order number it uses exists in the store it
is given; the spoken text has no digits (piper would read "10023" as "ten thousand twenty-three").
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from voxcart.brain.language import spell_digits

from .wer import canonical_tokens

__all__ = ["JOBS", "BenchSentence", "in_domain_sentences", "in_samples", "quick_subset"]

JOBS: Final = (
    "order_status", "return", "availability", "policy", "cancel", "address", "human", "yes", "no", "goodbye",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class BenchSentence:
    """One thing a caller says.

    Attributes:
        text: the words, as spoken (lower case, numbers as words).
        job: what the caller wants (one of :data:`JOBS`).
        intent: the brain intent it should get; ``"yes"``/``"no"`` for confirmations; None if the brain has none.
        verbatim: the phrasing is one of the brain's sample templates.
        order: the order number said, as digits, if any.
    """

    text: str
    job: str
    intent: str | None
    verbatim: bool = False
    order: str | None = None


# (template, job, intent, verbatim); {order} is spoken digit by digit, {order_oh} with "oh" for zero.
_TEMPLATES: Final[list[tuple[str, str, str | None, bool]]] = [
    # order status
    ("can you tell me where my order {order} is", "order_status", "order_status", False),
    ("i'm calling to check on order {order}", "order_status", "order_status", False),
    ("my package still hasn't arrived", "order_status", "order_status", False),
    ("has order {order_oh} shipped yet", "order_status", "order_status", False),
    ("i'd like an update on my delivery please", "order_status", "order_status", False),
    ("i still have not received order {order}", "order_status", "order_status", False),
    ("when is my stuff going to get here", "order_status", "order_status", False),
    ("where is my order", "order_status", "order_status", True),
    ("my order number is {order}", "order_status", "order_status", True),
    ("i want to check the status of order {order}", "order_status", "order_status", True),
    ("track my package", "order_status", "order_status", True),
    # returns
    ("i'd like to send back the rain jacket it's too small", "return", "return", False),
    ("how can i return a pair of sneakers", "return", "return", False),
    ("the hiking boots don't fit so i need to return them", "return", "return", False),
    ("i need to return order {order_oh}", "return", "return", False),
    ("i bought the wrong size and want to return it", "return", "return", False),
    ("i need to send back the hoodie", "return", "return", False),
    ("i want to make a return", "return", "return", True),
    # availability
    ("do you have the denim jacket in a medium", "availability", "availability", False),
    ("is the navy sweater available in extra large", "availability", "availability", False),
    ("are the white sneakers in stock in size ten", "availability", "availability", False),
    ("i'm looking for a black beanie", "availability", "availability", False),
    ("do you carry the puffer vest in red", "availability", "availability", False),
    ("does the everyday tee come in olive", "availability", "availability", False),
    ("got any hiking boots in size eleven", "availability", "availability", False),
    ("do you have the trail hoodie in stock", "availability", "availability", True),
    ("how much is the puffer vest", "availability", "availability", False),
    # policies
    ("how many days do i have to send something back", "policy", "return_policy", False),
    ("what's your policy on returns", "policy", "return_policy", False),
    ("how much do you charge for express shipping", "policy", "shipping", False),
    ("how soon will it get to me with standard shipping", "policy", "shipping", False),
    ("what time do you open on saturday", "policy", "hours", False),
    ("are you open on sunday", "policy", "hours", False),
    ("what is your return policy", "policy", "return_policy", True),
    ("how long does shipping take", "policy", "shipping", True),
    ("do you offer gift wrapping", "policy", "faq", True),
    # cancel
    ("please cancel order {order}", "cancel", "cancel", False),
    ("i changed my mind and want to cancel my order", "cancel", "cancel", False),
    ("can you cancel order {order_oh} before it ships", "cancel", "cancel", False),
    ("cancel my order", "cancel", "cancel", True),
    # address change (the brain has no intent for it)
    ("i need to change the shipping address on my order", "address", None, False),
    ("can i update my delivery address", "address", None, False),
    ("i moved can you send it to my new address", "address", None, False),
    # a person
    ("can i talk to a real person please", "human", "human", False),
    ("put me through to a representative", "human", "human", False),
    ("i'd like to speak with someone", "human", "human", False),
    ("i want to talk to a person", "human", "human", True),
    ("transfer me to an agent", "human", "human", True),
    # yes / no
    ("yeah that's correct", "yes", "yes", False),
    ("sure go ahead", "yes", "yes", False),
    ("yes that's the one", "yes", "yes", False),
    ("yes", "yes", "yes", True),
    ("yes please", "yes", "yes", True),
    ("nope that's not it", "no", "no", False),
    ("no i don't want that", "no", "no", False),
    ("no", "no", "no", True),
    ("no thanks", "no", "no", True),
    # goodbye
    ("that's all i needed thanks bye", "goodbye", "goodbye", False),
    ("okay thank you goodbye", "goodbye", "goodbye", False),
    ("great that's everything have a nice day bye", "goodbye", "goodbye", False),
    ("goodbye", "goodbye", "goodbye", True),
    ("no that is all", "goodbye", "goodbye", True),
]

_QUICK: Final = (
    "can you tell me where my order {order} is",
    "is the navy sweater available in extra large",
    "i need to return order {order_oh}",
    "can i talk to a real person please",
    "yes please",
)
"""The ``--quick`` subset: one per main job, two with order numbers."""


def _oh(digits: str) -> str:
    return " ".join("oh" if d == "0" else spell_digits(d) for d in digits)


def in_domain_sentences(order_numbers: Sequence[str]) -> list[BenchSentence]:
    """The test sentences, order-number slots filled with ``order_numbers`` in turn.

    Args:
        order_numbers: real order numbers of the store (digits), e.g. the demo seed's.

    Raises:
        ValueError: no order number, or one that is not all digits.
    """
    numbers = [n for n in order_numbers if n.isdigit()]
    if not numbers or len(numbers) != len(order_numbers):
        raise ValueError(f"in_domain_sentences: need digit-only order numbers, got {list(order_numbers)!r}")
    out: list[BenchSentence] = []
    k = 0
    for template, job, intent, verbatim in _TEMPLATES:
        order = None
        text = template
        if "{order" in template:
            order = numbers[k % len(numbers)]
            k += 1
            text = template.format(order=spell_digits(order), order_oh=_oh(order))
        out.append(BenchSentence(text=text, job=job, intent=intent, verbatim=verbatim, order=order))
    return out


def quick_subset(sentences: Iterable[BenchSentence]) -> list[BenchSentence]:
    """The few sentences ``--quick`` uses (see :data:`_QUICK`), in corpus order."""
    chosen = list(sentences)
    by_template = dict(zip((t for t, *_ in _TEMPLATES), chosen, strict=False))
    return [by_template[t] for t in _QUICK if t in by_template]


def _masked(text: str) -> str:
    """Canonical tokens with every number (however it is said) replaced by one ``#``."""
    out: list[str] = []
    for token in canonical_tokens(text):
        if not token.isdigit():
            out.append(token)
        elif not out or out[-1] != "#":
            out.append("#")
    return " ".join(out)


def in_samples(text: str, samples: Iterable[str]) -> bool:
    """Whether ``text`` is one of ``samples`` up to the number said (order numbers differ between fills)."""
    return _masked(text) in {_masked(s) for s in samples}
