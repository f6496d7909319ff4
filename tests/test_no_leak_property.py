"""Property: over generated calls, no order detail is said to a caller who has not proved to be its customer.

A generated call picks a store (demo or other), a calling number (a customer's, an unknown one, or withheld),
an hour (open or closed) and up to 10 caller turns from a pool built from the store: order numbers of every
customer (digit by digit, as digits, as a number, keyed), job requests with and without numbers, right and
wrong ZIP codes and emails of every customer (spoken or keyed), yes/no, "that order", product and policy
questions, a new address, a person, repeat, silence and noise. Each call runs on a fresh store in which every
processing order already has a shipping address of its own (so addresses exist to leak).

Who may hear what is decided by the test, not read from the dialog's state: the caller is *entitled* to a
customer when the calling number is that customer's phone, or when the caller has said or keyed, at any
turn so far (this one included), that customer's ZIP code or email. This is deliberately as generous as the
identity rule allows (store.md), so a flagged reply is a real leak, and it catches a dialog that verifies
wrongly as well as one that forgets to verify. An order is *protected* while its customer is not entitled.

The leak detector (:func:`leaks`) looks at each reply for each protected order O and flags:

1. O's tracking number, whole or its last 6 characters, in any grouping: the reply is reduced to letters and
   digits with digit words as digits ("1 Z 9, 9 9 A" and "one zee nine" both become "1z9..."), so commas,
   spaces and word forms cannot hide it.
2. O's shipping address: the street name (unique per order) in any case.
3. O's number next to a status: a sentence where O's number is said as a run of digits (any grouping, digit
   words included, compared whole) together with a status phrase of any status ("has shipped", "was
   delivered", "cancelled", "placed", ...).
4. Details that are not unique to O, only in a reply about an order (one that names an order number or says
   "your order", "the order", "tracking", "refund", "your return", ...), after the store's published phrases
   (policy categories and conditions, FAQ, hours, name) are taken out of it ("we can't accept returns of gift
   cards" is policy): O's item names, O's carrier, and the phrases of O's status and its returns' statuses
   (these only when the reply names no order number the caller is entitled to, since status talk is then
   about that order). Such a detail is not counted when it is also a detail of an order the caller is
   entitled to (same product, carrier or status: the reply may be about that order), or when the caller
   said it themselves (a product they named).

Rule 4's order-context gate is what keeps product answers innocent: "Yes, the Trail Hoodie in blue is in
stock" names a product of someone's order but is not about an order. Prices, dates and ZIP codes are not
checked: the caller's own ZIP code is echoed as input, and dates alone do not identify an order.
The detector itself is tested on crafted replies below (it fires on leaks and stays quiet on innocent text).
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from voxcart.brain.dialog import Conversation, Dialog, Reply
from voxcart.brain.language import spell_digits
from voxcart.brain.numbers import number_words
from voxcart.brain.store import FixedClock, SqliteStore, demo_seed_path
from voxcart.common.seed import Seed, load_seed

SEEDS = {
    "demo": demo_seed_path(),
    "other": Path(__file__).parents[1] / "services" / "brain" / "tests" / "data" / "other_store.json",
}
UNKNOWN_CALLER: Final = "+15550009999"
STREETS: Final = ("quillfeather", "bramblewood", "thistlecombe", "larkspurrow", "mosswhistle", "fernhollow")
"""Street names of the addresses given to processing orders: words no store or dialog says otherwise."""

_DIGIT_WORDS: Final = {w: str(i) for i, w in enumerate("zero one two three four five six seven eight nine".split())}
_DIGIT_WORDS["oh"] = "0"
_STATUS_PHRASES: Final[dict[str, tuple[str, ...]]] = {
    "processing": ("being prepared", "hasn't shipped", "has not shipped", "not shipped yet", "processing"),
    "shipped": ("has shipped", "already shipped", "on its way", "should arrive", "running late", "due to arrive"),
    "delivered": ("was delivered", "delivered on", "delivered today", "delivered yesterday", "been delivered"),
    "cancelled": ("cancelled", "canceled"),
    "returned": ("was returned", "been returned", "already returned"),
    "refunded": ("refunded",),
    "received": ("we received",),
    "in_transit": ("on its way back",),
    "requested": ("was opened", "waiting to receive"),
    "pending": ("was opened", "waiting to receive"),
    "approved": ("was opened", "waiting to receive"),
    "rejected": ("wasn't accepted", "was not accepted"),
}
_ANY_STATUS: Final = tuple({p for phrases in _STATUS_PHRASES.values() for p in phrases} | {"placed"})
_ORDER_CONTEXT: Final = (
    "your order", "the order", "that order", "this order", "order number", "package", "tracking", "refund",
    "your return", "return of the", "will ship to",
)  # fmt: skip


# -- the detector ----------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1024)
def _words(text: str) -> tuple[str, ...]:
    return tuple(_DIGIT_WORDS.get(w, w) for w in re.findall(r"[a-z0-9]+", text.lower()))


@functools.lru_cache(maxsize=1024)
def _code(text: str) -> str:
    """Letters and digits only, digit words as digits."""
    return "".join(_words(text))


@functools.lru_cache(maxsize=1024)
def _digit_runs(sentence: str) -> frozenset[str]:
    """Runs of digits said one after another ("1 0 0 2 3", "one oh oh two three", "10023"), each joined."""
    runs: set[str] = set()
    current = ""
    for word in _words(sentence):
        if word.isdigit():
            current += word
        else:
            if current:
                runs.add(current)
            current = ""
    if current:
        runs.add(current)
    return frozenset(runs)


@functools.lru_cache(maxsize=1024)
def _sentences(text: str) -> tuple[str, ...]:
    return tuple(s for s in re.split(r"(?<=[.!?])\s+", text) if s)


@dataclass(frozen=True)
class Known:
    """What a store holds about an order, as the detector compares it."""

    number: str
    customer: str
    statuses: frozenset[str]
    """The order's status and its returns' statuses."""
    items: frozenset[str]
    carrier: str | None
    tracking: str | None
    street: str | None


def known_orders(store: SqliteStore, seed: Seed, streets: dict[str, str]) -> dict[str, Known]:
    """Every order of the seed as it stands in ``store`` now (statuses change when a call cancels or returns)."""
    known: dict[str, Known] = {}
    for seeded in seed.orders:
        order = store.get_order(seeded.number) or seeded
        items = frozenset(p.name for i in order.items if (p := store.product_for_sku(i.sku)) is not None)
        statuses = {seeded.status, order.status, *(r.status for r in store.returns_for_order(order.number))}
        known[order.number] = Known(
            number=order.number,
            customer=order.customer,
            statuses=frozenset(statuses),
            items=items,
            carrier=order.carrier,
            tracking=order.tracking,
            street=streets.get(order.number),
        )
    return known


def public_phrases(seed: Seed) -> tuple[str, ...]:
    """Text the store publishes (policies, FAQ, hours, name): a product name inside it tells nothing of an order."""
    policies, info = seed.policies, seed.store
    phrases = [*policies.non_returnable_categories, *policies.returnable_conditions, info.name, info.hours or ""]
    phrases += [text for entry in policies.faq for text in (entry.question, entry.answer)]
    return tuple(sorted({p.lower() for p in phrases if p}, key=len, reverse=True))


def leaks(
    reply: str,
    protected: Known,
    entitled: Iterable[Known],
    all_numbers: Iterable[str],
    said: str,
    public: Sequence[str] = (),
) -> list[str]:
    """What ``reply`` tells about the ``protected`` order (see the module docstring); empty when nothing.

    Args:
        reply: the agent's reply text.
        protected: the order the caller is not entitled to.
        entitled: the orders the caller is entitled to (their details may be said).
        all_numbers: every order number of the store (for the order context).
        said: everything the caller said so far, lower-case.
        public: the store's published phrases (:func:`public_phrases`), left out of rule 4.
    """
    found: list[str] = []
    text = reply.lower()
    code = _code(reply)
    if protected.tracking:
        tracking = _code(protected.tracking)
        if tracking in code or (len(tracking) >= 10 and tracking[-6:] in code):
            found.append(f"tracking number {protected.tracking}")
    if protected.street and protected.street in text:
        found.append(f"shipping address ({protected.street})")
    for sentence in _sentences(reply):
        if protected.number in _digit_runs(sentence):
            status = next((p for p in _ANY_STATUS if p in sentence.lower()), None)
            if status:
                found.append(f"status of order {protected.number} ({status!r} in {sentence!r})")
    runs = _digit_runs(reply)
    if not (any(n in runs for n in all_numbers) or any(c in text for c in _ORDER_CONTEXT)):
        return found
    allowed = list(entitled)
    about_allowed = any(o.number in runs for o in allowed)
    for phrase in public:
        text = re.sub(rf"\b{re.escape(phrase)}\b", " ", text)
    items = {i for o in allowed for i in o.items}
    carriers = {o.carrier.lower() for o in allowed if o.carrier}
    phrases = {p for o in allowed for s in o.statuses for p in _STATUS_PHRASES.get(s, ())}
    for item in protected.items:
        if item.lower() in text and item not in items and item.lower() not in said:
            found.append(f"item {item!r}")
    carrier = (protected.carrier or "").lower()
    if carrier and re.search(rf"\b{re.escape(carrier)}\b", text) and carrier not in carriers:
        found.append(f"carrier {protected.carrier!r}")
    for status in () if about_allowed else protected.statuses:
        for phrase in _STATUS_PHRASES.get(status, ()):
            if phrase in text and phrase not in phrases:
                found.append(f"status {status!r} ({phrase!r})")
    return found


# -- generated calls -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Act:
    """One caller turn: words, keys or silence, and the customers it proves to be (by ZIP code or email)."""

    kind: str
    text: str = ""
    proves: frozenset[str] = frozenset()


@functools.cache
def _seed(name: str) -> Seed:
    return load_seed(SEEDS[name])


def _streets(seed: Seed) -> dict[str, str]:
    processing = [o.number for o in seed.orders if o.status == "processing"]
    return dict(zip(processing, STREETS, strict=False))


def _pool(name: str) -> list[Act]:
    """The caller turns calls of store ``name`` are drawn from."""
    seed = _seed(name)
    acts: list[Act] = []
    by_zip: dict[str, set[str]] = {}
    for c in seed.customers:
        if c.zip:
            by_zip.setdefault(c.zip, set()).add(c.id)
    known = {o.number for o in seed.orders}
    unknown = next(str(n) for n in range(98761, 99999) if str(n) not in known)
    for n in [*(o.number for o in seed.orders), unknown]:
        acts += [
            Act("say", f"where is my order {spell_digits(n)}"),
            Act("say", f"status of {n} please"),
            Act("say", f"order {number_words(int(n))}"),
            Act("say", spell_digits(n)),
            Act("say", f"i want to cancel order {spell_digits(n)}"),
            Act("say", f"i want to return order {spell_digits(n)}"),
            Act("say", f"where is my refund for order {spell_digits(n)}"),
            Act("say", f"i need to change the shipping address on order {spell_digits(n)}"),
            Act("keys", f"{n}#"),
        ]
    for zip_code, ids in by_zip.items():
        proves = frozenset(ids)
        acts += [Act("say", spell_digits(zip_code), proves), Act("say", f"my zip is {zip_code}", proves)]
        acts.append(Act("keys", f"{zip_code}#", proves))
    for c in seed.customers:
        if c.email:
            local, _, domain = c.email.partition("@")
            spoken = f"{local} at {domain}".replace(".", " dot ")
            acts.append(Act("say", f"my email is {spoken}", frozenset({c.id})))
    for p in seed.products[:4]:
        v = p.variants[0]
        acts.append(Act("say", f"do you have the {p.name} in {v.color or ''} size {v.size or ''}".strip()))
        acts.append(Act("say", f"i want to return the {p.name}"))
    acts += [
        Act("say", text)
        for text in (
            "where is my order", "where is my package", "i want to return something", "cancel my order",
            "where is my refund", "change my shipping address", "what is the status", "has it shipped",
            "what is the tracking number", "when will it arrive", "what was in that order", "that order",
            "the first one", "yes", "no", "yes please", "no thanks", "what is your return policy",
            "how much is shipping", "what are your hours", "repeat that", "say that again",
            "it is 12 elm street springfield", "blorp fizzle", "i want to talk to a person",
            "please call me back my name is alex", "one two three four five", "nobody at example dot com", "bye",
        )
    ]  # fmt: skip
    acts += [Act("keys", "1"), Act("keys", "*"), Act("keys", "0#"), Act("silence")]
    return acts


def _callers(name: str) -> list[str]:
    return [*(c.phone for c in _seed(name).customers if c.phone), UNKNOWN_CALLER, ""]


@st.composite
def calls(draw: st.DrawFn, name: str) -> tuple[str, int, list[Act]]:
    caller = draw(st.sampled_from(_callers(name)))
    hour = draw(st.sampled_from([11, 23]))
    acts = draw(st.lists(st.sampled_from(_pool(name)), min_size=1, max_size=10))
    return caller, hour, acts


def _run_call(name: str, caller: str, hour: int, acts: Sequence[Act]) -> None:
    seed = _seed(name)
    today = max(o.placed for o in seed.orders) + dt.timedelta(days=2)
    store = SqliteStore(seed, clock=FixedClock.on(today, seed.store.timezone, hour=hour))
    streets = _streets(seed)
    for number, street in streets.items():
        store.change_address(number, f"41 {street} lane riverton", key=f"setup:{number}")
    convo = Conversation(Dialog(store), call_id="CAproperty")
    entitled = {c.id for c in seed.customers if caller and c.phone == caller}
    numbers = [o.number for o in seed.orders]
    public = public_phrases(seed)
    said = ""
    buffer = ""
    replies = [(convo.start(caller), "(greeting)")]
    for act in acts:
        if act.kind == "say":
            said += " " + act.text.lower()
            entitled |= act.proves
            reply = convo.say(act.text)
        elif act.kind == "keys":
            for key in act.text:
                if key == "#":
                    entitled |= {c.id for c in seed.customers if c.zip and c.zip == buffer}
                    buffer = ""
                else:
                    buffer = "" if key == "*" else buffer + key
            reply = convo.keys(act.text)
        else:
            entitled |= {c.id for c in seed.customers if buffer and c.zip == buffer}
            buffer = ""
            reply = convo.silence()
        replies.append((reply, act.text or act.kind))
        _check(store, seed, streets, entitled, numbers, said, public, reply, convo)


def _check(
    store: SqliteStore,
    seed: Seed,
    streets: dict[str, str],
    entitled: set[str],
    numbers: list[str],
    said: str,
    public: tuple[str, ...],
    reply: Reply,
    convo: Conversation,
) -> None:
    if not reply.sentences:
        return
    known = known_orders(store, seed, streets)
    allowed = [k for k in known.values() if k.customer in entitled]
    for order in known.values():
        if order.customer in entitled:
            continue
        found = leaks(reply.text, order, allowed, numbers, said, public)
        assert not found, (
            f"told a caller not entitled to order {order.number} (customer {order.customer}; entitled: "
            f"{sorted(entitled)}): {found}\n" + "\n".join(f"  {who:>6}: {text}" for who, text in convo.transcript)
        )


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_no_order_detail_reaches_an_unverified_caller(name: str) -> None:
    @settings(
        max_examples=150,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(call=calls(name))
    def check(call: tuple[str, int, list[Act]]) -> None:
        caller, hour, acts = call
        _run_call(name, caller, hour, acts)

    check()


# -- the detector on crafted replies -----------------------------------------------------------------------------

_ORDER = Known(
    number="10023",
    customer="C1",
    statuses=frozenset({"shipped"}),
    items=frozenset({"Trail Hoodie"}),
    carrier="UPS",
    tracking="1Z999AA10123456784",
    street="quillfeather",
)
_NUMBERS = ["10023", "10031"]


@pytest.mark.parametrize(
    "reply",
    [
        "The tracking number is 1 Z 9, 9 9 A, A 1 0, 1 2 3, 4 5 6, 7 8 4.",
        "Your tracking number ends in four five six seven eight four.",
        "It's 1Z999AA10123456784.",
        "Order one zero zero two three has shipped.",
        "I heard 1 0 0 2 3. Order 1 0 0 2 3 has shipped with UPS.",
        "Is this about order 1 0 0 2 3, placed November 2nd?",
        "Your order has the Trail Hoodie in blue.",
        "Okay. It will ship to 41 Quillfeather lane.",
        "That order is on its way.",
    ],
)
def test_detector_finds_leaks(reply: str) -> None:
    assert leaks(reply, _ORDER, [], _NUMBERS, said="")


@pytest.mark.parametrize(
    "reply",
    [
        "We can't accept returns of trail hoodies. Refunds take 5 to 7 business days.",
        "I heard 1 0 0 2 3. To protect your privacy, I need to confirm it's your order.",
        "Please say or key in the ZIP code on the order, or tell me the email address we have on file.",
        "Yes, the Trail Hoodie in blue, size small, is in stock. It's 59 dollars.",
        "Standard shipping takes 3 to 5 business days and costs 5 dollars.",
        "You can return items within 30 days of delivery. Refunds take 5 to 7 business days.",
        "I can check an order, help with a return, look up a product, or answer questions about our policies.",
        "I'm sorry, that doesn't match our records, so I can't share details of that order.",
    ],
)
def test_detector_ignores_innocent_replies(reply: str) -> None:
    assert not leaks(reply, _ORDER, [], _NUMBERS, said="", public=["trail hoodies"])


def test_detector_allows_what_an_entitled_order_shares() -> None:
    """A reply about the caller's own shipped UPS hoodie order is not a leak of another such order."""
    mine = Known(
        number="10031",
        customer="C2",
        statuses=frozenset({"shipped"}),
        items=frozenset({"Trail Hoodie"}),
        carrier="UPS",
        tracking="1Z999AA10123450000",
        street=None,
    )
    reply = "Order 1 0 0 3 1 has shipped with UPS. It has the Trail Hoodie in blue."
    assert not leaks(reply, _ORDER, [mine], _NUMBERS, said="")
    assert leaks(reply, _ORDER, [], _NUMBERS, said="")
