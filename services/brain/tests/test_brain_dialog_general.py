"""Greeting, policies, people, goodbye, misunderstanding, silence, state round trips, speakable output."""

from __future__ import annotations

import re
from collections.abc import Callable

import msgspec
import pytest

from voxcart.brain.dialog import Conversation, Dialog, DialogState, Reply, sample_utterances, vocabulary
from voxcart.brain.language import catalogue, say_digits, spell_digits, spoken_form
from voxcart.brain.nlu import INTENTS, score_intents
from voxcart.brain.numbers import digit_runs
from voxcart.brain.phrasing import country_name, say_price, say_size
from voxcart.brain.store import FixedClock, SqliteStore
from voxcart.common.seed import Seed


def _customer_phone(seed: Seed) -> tuple[str, str]:
    customer = next(c for c in seed.customers if c.phone)
    assert customer.phone
    return customer.phone, customer.name.split()[0]


def test_greeting_names_the_shop(seed: Seed, convo: Conversation) -> None:
    reply = convo.start("+15550009999")
    assert reply.intent == "greeting" and reply.expect == "free"
    assert reply.sentences[0] == f"Good morning, and thanks for calling {seed.store.name}."
    assert reply.sentences[-1] == "How can I help you today?"


def test_greeting_a_known_caller_by_first_name(seed: Seed, convo: Conversation) -> None:
    phone, first = _customer_phone(seed)
    reply = convo.start(phone)
    assert reply.sentences[0] == f"Hi {first}, thanks for calling {seed.store.name}."
    assert convo.state.caller_customer is not None


def test_greeting_time_of_day_follows_the_clock(seed: Seed, store: SqliteStore, clock: FixedClock) -> None:
    clock.advance(seconds=8 * 3600)  # 11:00 -> 19:00 in the store's zone
    reply = Dialog(store).greet(DialogState(), "")
    assert reply.sentences[0].startswith("Good evening")


def test_shipping_policy(seed: Seed, convo: Conversation) -> None:
    convo.start("")
    reply = convo.say("how long does shipping take")
    assert reply.intent == "shipping"
    for option in seed.policies.shipping:
        assert option.days in reply.text and say_price(option.price) in reply.text
    for code in seed.policies.ships_to:
        assert country_name(code) in reply.text
    assert reply.sentences[-1] == "Is there anything else I can help you with?"


def test_shipping_to_a_country_not_served(seed: Seed, convo: Conversation) -> None:
    convo.start("")
    reply = convo.say("do you ship to japan")
    assert "we don't ship to Japan" in reply.text


def test_hours(seed: Seed, convo: Conversation) -> None:
    convo.start("")
    reply = convo.say("what time do you open")
    assert reply.intent == "hours" and seed.store.hours and seed.store.hours in reply.text


def test_return_policy(seed: Seed, convo: Conversation) -> None:
    convo.start("")
    reply = convo.say("what is your return policy")
    assert reply.intent == "return_policy"
    assert f"within {seed.policies.return_window_days} days of delivery" in reply.text
    for category in seed.policies.non_returnable_categories:
        assert category in reply.text
    assert seed.policies.refund_days and seed.policies.refund_days in reply.text


def test_faq(seed: Seed, convo: Conversation) -> None:
    convo.start("")
    for entry in seed.policies.faq:
        reply = convo.say(spoken_form(entry.question))
        assert reply.intent == "faq", entry.question
        assert entry.answer.split(".")[0] in reply.text


@pytest.mark.parametrize("ask", ["can i talk to a person", "representative", "i want to speak with a human please"])
def test_asking_for_a_person_transfers(seed: Seed, convo: Conversation, ask: str) -> None:
    convo.start("")
    convo.say("where is my order")  # in the middle of something
    reply = convo.say(ask)
    assert reply.transfer_to == seed.store.handoff_number and not reply.end_call
    assert "transfer" in reply.text and convo.ended
    assert convo.say("hello").sentences == []


def test_pressing_zero_transfers(seed: Seed, convo: Conversation) -> None:
    convo.start("")
    assert convo.keys("0#").transfer_to == seed.store.handoff_number


def test_goodbye_ends_the_call(seed: Seed, convo: Conversation) -> None:
    convo.start("")
    reply = convo.say("no that is all thank you goodbye")
    assert reply.end_call and reply.intent == "goodbye" and seed.store.name in reply.text
    assert convo.ended


def test_no_after_anything_else_ends_the_call(convo: Conversation) -> None:
    convo.start("")
    assert convo.say("what are your hours").sentences[-1] == "Is there anything else I can help you with?"
    assert convo.say("no thanks").end_call


def test_misunderstood_twice_offers_a_person(seed: Seed, convo: Conversation) -> None:
    convo.start("")
    first = convo.say("purple monkey dishwasher")
    assert first.intent == "misunderstood" and first.sentences[0] == "Sorry, I didn't catch that."
    assert first.sentences[-1] == "How can I help you today?"
    second = convo.say("banana telescope")
    assert "transfer" in second.text and second.expect == "yes_no"
    assert convo.say("yes").transfer_to == seed.store.handoff_number


def test_misunderstood_then_understood_resets(convo: Conversation) -> None:
    convo.start("")
    convo.say("purple monkey dishwasher")
    assert convo.say("what are your hours").intent == "hours"
    assert convo.say("banana telescope").sentences[0] == "Sorry, I didn't catch that."


def test_low_confidence_counts_as_not_understood(store: SqliteStore) -> None:
    convo = Conversation(Dialog(store, min_confidence=0.5))
    convo.start("")
    assert convo.say("what are your hours", confidence=0.2).intent == "misunderstood"
    assert convo.say("what are your hours", confidence=0.9).intent == "hours"


def test_silence_reprompts_then_says_goodbye(convo: Conversation) -> None:
    convo.start("")
    convo.say("where is my order")
    first = convo.silence()
    assert first.sentences[0] == "Are you still there?" and "What's the order number?" in first.text
    assert first.expect == "digits" and not first.end_call
    second = convo.silence()
    assert second.end_call and convo.ended


def test_silence_completes_a_keyed_entry(seed: Seed, convo: Conversation) -> None:
    order = seed.orders[0]
    convo.start("")
    convo.say("where is my order")
    convo.keys(order.number)  # no '#'
    assert convo.silence().sentences[0] == f"I heard {' '.join(order.number)}."


def test_star_clears_a_keyed_entry(seed: Seed, convo: Conversation) -> None:
    order = seed.orders[0]
    convo.start("")
    convo.keys("999*")
    assert convo.keys(order.number + "#").sentences[0] == f"I heard {' '.join(order.number)}."


def test_repeat(convo: Conversation) -> None:
    convo.start("")
    said = convo.say("what is your return policy")
    assert convo.say("can you repeat that").sentences == said.sentences


def _script(seed: Seed) -> list[Callable[[Conversation], Reply]]:
    order = next(o for o in seed.orders if o.status == "shipped")
    customer = next(c for c in seed.customers if c.id == order.customer)
    product = next(p for p in seed.products if len(p.variants) > 1)
    return [
        lambda c: c.say("hi i have a question about my order"),
        lambda c: c.say(spell_digits(order.number)),
        lambda c: c.say(spell_digits(customer.zip or "")),
        lambda c: c.say("yes"),
        lambda c: c.say("no"),
        lambda c: c.say(f"do you have the {spoken_form(product.name)}"),
        lambda c: c.say(product.variants[0].color or "medium"),
        lambda c: c.silence(),
        lambda c: c.say("purple monkey"),
        lambda c: c.say("how much is shipping"),
        lambda c: c.say("no thanks"),
    ]


@pytest.mark.parametrize("codec", ["json", "msgpack"])
def test_state_round_trips_between_every_turn(seed: Seed, codec: str) -> None:
    """Two replicas: one keeps the state in memory, the other restores it from bytes before every turn."""
    encode = msgspec.json.encode if codec == "json" else msgspec.msgpack.encode
    decode = msgspec.json.decode if codec == "json" else msgspec.msgpack.decode
    clock = FixedClock.on(max(o.placed for o in seed.orders), seed.store.timezone)
    steady = Conversation(Dialog(SqliteStore(seed, clock=clock)), call_id="CA1")
    moving_store = SqliteStore(seed, clock=clock)
    order = next(o for o in seed.orders if o.status == "shipped")
    customer = next(c for c in seed.customers if c.id == order.customer)
    assert customer.zip
    steady_replies = [steady.start("")]
    state = DialogState(call_id="CA1")
    moving_replies = [Dialog(moving_store).greet(state, "")]
    blob = encode(state)
    for step in _script(seed):
        steady_replies.append(step(steady))
        restored = decode(blob, type=DialogState)
        assert restored == state
        replica = Conversation(Dialog(moving_store), restored)
        moving_replies.append(step(replica))
        state = replica.state
        blob = encode(state)
    assert [r.sentences for r in moving_replies] == [r.sentences for r in steady_replies]
    assert steady_replies[-1].end_call
    assert customer.id in decode(blob, type=DialogState).verified


def test_state_restored_mid_identity_check(seed: Seed, store: SqliteStore) -> None:
    order = next(o for o in seed.orders if o.status == "delivered")
    customer = next(c for c in seed.customers if c.id == order.customer)
    assert customer.zip
    first = Conversation(Dialog(store), call_id="CA2")
    first.start("")
    first.say(f"where is order {spell_digits(order.number)}")
    saved = msgspec.json.encode(first.state)
    second = Conversation(Dialog(store), msgspec.json.decode(saved, type=DialogState))
    reply = second.say(spell_digits(customer.zip))
    assert reply.sentences[0] == "Thank you, that matches." and "delivered" in reply.text


_UNSPEAKABLE = re.compile(r"[*_#`\[\]{}<>$|\\~^]|\d{4}-\d{2}-\d{2}|None|\s{2,}|\.\.")


def test_every_sentence_is_speakable(seed: Seed, store: SqliteStore) -> None:
    replies: list[Reply] = []
    for customer in seed.customers:
        for order in seed.orders:
            convo = Conversation(Dialog(store))
            replies.append(convo.start(customer.phone or ""))
            for line in (f"where is my order {spell_digits(order.number)}", spell_digits(customer.zip or "0"), "yes"):
                replies.append(convo.say(line))
            for line in ("i want to return it", "yes", "where is my refund", "cancel it", "no"):
                replies.append(convo.say(line))
    for product in seed.products:
        convo = Conversation(Dialog(store))
        convo.start("")
        replies.append(convo.say(f"do you have the {spoken_form(product.name)}"))
        for variant in product.variants:
            replies.append(convo.say(f"{variant.color or ''} {spoken_form(variant.size or '')}"))
    convo = Conversation(Dialog(store))
    convo.start("")
    for line in ("shipping", "hours", "return policy", "repeat that", "agent"):
        replies.append(convo.say(line))
    sentences = [s for r in replies for s in r.sentences]
    assert len(sentences) > 500
    for sentence in sentences:
        assert sentence == sentence.strip() and (sentence[0].isupper() or sentence[0].isdigit()), sentence
        assert sentence[-1] in ".?!", sentence
        assert not _UNSPEAKABLE.search(sentence), sentence
        assert len(sentence) < 200, sentence


def test_vocabulary_covers_the_store(seed: Seed, store: SqliteStore) -> None:
    words = vocabulary(store)
    assert words == sorted(set(words)) and all(w == w.lower() and w.strip() for w in words)
    text = " ".join(words)
    for product in seed.products:
        assert spoken_form(product.name) in words
        for alias in product.aliases:
            assert spoken_form(alias) in words
        for variant in product.variants:
            assert variant.color is None or spoken_form(variant.color) in words
    for needed in ("oh", "zero", "nine", "yes", "no", "representative", "return policy", "hundred"):
        assert needed in text
    assert not any(re.search(r"\d", w) for w in words)


def test_sample_utterances_cover_every_intent(seed: Seed, store: SqliteStore) -> None:
    samples = sample_utterances(store)
    assert samples == sample_utterances(store)  # deterministic
    assert 200 <= len(samples) <= 2000 and len(set(samples)) == len(samples)
    assert all(s == spoken_form(s) for s in samples), [s for s in samples if s != spoken_form(s)][:3]
    joined = "\n".join(samples)
    for product in seed.products:
        assert spoken_form(product.name) in joined
    intents = {
        score_intents(s, product_score=3.0 if store.find_products(s) else 0.0, faq=seed.policies.faq)[0].intent
        for s in samples
    }
    assert set(INTENTS) <= intents | {"unknown"}
    for customer in seed.customers:  # no customer data in a language model
        assert customer.email is None or customer.email.split("@")[0] not in joined


def test_sample_utterances_name_every_product_colour_and_size(seed: Seed, store: SqliteStore) -> None:
    """Whatever the store sells, the language model hears each of its names, aliases, colours and sizes."""
    joined = "\n".join(sample_utterances(store))
    for product in seed.products:
        for name in (product.name, *product.aliases):
            assert re.search(rf"\b{spoken_form(name)}\b", joined), name
        for variant in product.variants:
            for value in (variant.color, variant.size and say_size(variant.size)):
                assert not value or re.search(rf"\b{spoken_form(value)}\b", joined), value


def test_catalogue(seed: Seed, store: SqliteStore) -> None:
    lists = catalogue(store)
    assert set(lists) == {"names", "colors", "sizes"}
    assert all(v == sorted(set(v)) and all(x == spoken_form(x) and x for x in v) for v in lists.values())
    for product in seed.products:
        assert {spoken_form(n) for n in (product.name, *product.aliases)} <= set(lists["names"])
        assert {spoken_form(v.color) for v in product.variants if v.color} <= set(lists["colors"])
        assert {spoken_form(say_size(v.size)) for v in product.variants if v.size} <= set(lists["sizes"])
    assert not [s for s in lists["sizes"] if s.startswith("size ") or s in ("m", "s", "l", "os")]


@pytest.mark.parametrize("style", range(5))
def test_say_digits_reads_back(seed: Seed, style: int) -> None:
    """Every way of saying an order number or ZIP code reads back as the same digits."""
    for value in [o.number for o in seed.orders] + [c.zip for c in seed.customers if c.zip] + ["10023", "02139"]:
        assert digit_runs(say_digits(value, style)) == [value], (value, say_digits(value, style))
    assert say_digits("10023", 1) == "one oh oh two three" and say_digits("10023", 3) == "ten oh two three"
    assert say_digits("10023", 4) == "ten thousand twenty three" and say_digits("10023", 2) == "one double oh two three"


def test_store_without_handoff_number_or_hours(seed: Seed, clock: FixedClock) -> None:
    bare = msgspec.structs.replace(seed, store=msgspec.structs.replace(seed.store, handoff_number=None, hours=None))
    convo = Conversation(Dialog(SqliteStore(bare, clock=clock)))
    convo.start("")
    reply = convo.say("let me talk to a person")
    assert reply.transfer_to is None and "no one available" in reply.text and not convo.ended
    assert "don't have our opening hours" in convo.say("what are your hours").text
    convo.say("purple monkey")
    offer = convo.say("banana telescope")
    assert "transfer" not in offer.text and "I can check an order" in offer.text
