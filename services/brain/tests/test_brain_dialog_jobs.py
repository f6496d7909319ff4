"""Every caller job end to end by text, against both stores: address changes, messages outside opening hours,
refund status, delivery estimates, corrections of a read-back number, choosing by colour or place, similar
products, and that none of it tells an unverified caller anything about an order."""

from __future__ import annotations

import datetime as dt
import re

import msgspec
import pytest

from voxcart.brain.dialog import Conversation, Dialog, DialogState, Reply
from voxcart.brain.hours import parse_hours
from voxcart.brain.language import spell_digits, spoken_form
from voxcart.brain.phrasing import say_date, say_order_number, say_phone, say_price, say_size
from voxcart.brain.store import FixedClock, SqliteStore
from voxcart.common.seed import Customer, Order, OrderItem, Product, Seed, Variant

STRANGER = "+15550009999"
ADDRESS = "twelve oak lane portland oregon nine seven two zero five"
ADDRESS_WRITTEN = "12 oak lane portland oregon 97205"
ADDRESS_SAID = "12 oak lane portland oregon 9 7 2 0 5"


def _orders(seed: Seed, status: str) -> list[Order]:
    return [o for o in seed.orders if o.status == status]


def _customer(seed: Seed, order: Order) -> Customer:
    return next(c for c in seed.customers if c.id == order.customer)


def _phone(seed: Seed, order: Order) -> str:
    phone = _customer(seed, order).phone
    assert phone is not None
    return phone


def _night(clock: FixedClock, seed: Seed) -> None:
    """23:00 on the same day: outside both stores' hours."""
    clock.now = FixedClock.on(clock.now.date(), seed.store.timezone, hour=23).now
    hours = parse_hours(seed.store.hours)
    assert hours is not None and not hours.is_open(clock.now)


def _said(replies: list[Reply]) -> str:
    return " ".join(r.text for r in replies).lower()


# -- change the shipping address ----------------------------------------------------------------------------


def test_change_address_before_shipping(seed: Seed, store: SqliteStore, convo: Conversation) -> None:
    order = _orders(seed, "processing")[0]
    convo.start(_phone(seed, order))
    ask = convo.say(f"i need to change the shipping address on order {spell_digits(order.number)}")
    assert ask.intent == "change_address" and ask.expect == "address"
    assert "hasn't shipped yet" in ask.text and "ZIP code" in ask.text
    readback = convo.say(f"my new address is {ADDRESS}")
    assert readback.sentences == [f"I have {ADDRESS_SAID}.", "Is that right?"] and readback.expect == "yes_no"
    assert store.address_changes(order.number) == []  # nothing changes before the yes
    done = convo.say("yes that's right")
    assert done.sentences[0] == f"Done. Order {say_order_number(order.number)} will ship to {ADDRESS_SAID}."
    assert [c.address for c in store.address_changes(order.number)] == [ADDRESS_WRITTEN]
    assert store.get_order(order.number) == order


def test_change_address_suggests_the_callers_processing_order(seed: Seed, convo: Conversation) -> None:
    order = _orders(seed, "processing")[0]
    convo.start(_phone(seed, order))
    ask = convo.say("i moved and need to update my address")
    assert ask.expect == "yes_no" and "Is this about order" in ask.text
    assert convo.state.order_number is not None
    assert "hasn't shipped yet" in convo.say("yes").text


def test_corrected_address_is_read_back_again(seed: Seed, store: SqliteStore, convo: Conversation) -> None:
    order = _orders(seed, "processing")[0]
    convo.start(_phone(seed, order))
    convo.say(f"change the address for order {spell_digits(order.number)}")
    convo.say("one twenty three main street springfield six two seven zero one")
    fixed = convo.say(f"no it's {ADDRESS}")
    assert fixed.sentences[0] == f"I have {ADDRESS_SAID}." and fixed.expect == "yes_no"
    convo.say("yes")
    assert [c.address for c in store.address_changes(order.number)] == [ADDRESS_WRITTEN]


def test_unusable_or_rejected_addresses_offer_a_person(seed: Seed, store: SqliteStore, convo: Conversation) -> None:
    order = _orders(seed, "processing")[0]
    convo.start(_phone(seed, order))
    convo.say(f"i want to change the delivery address of order {spell_digits(order.number)}")
    again = convo.say("um the usual place")
    assert "didn't get the whole address" in again.text and again.expect == "address"
    convo.say(ADDRESS)
    offer = convo.say("no")
    assert "couldn't get the address right" in offer.text and "transfer" in offer.text
    assert offer.expect == "yes_no"
    assert convo.say("yes").transfer_to == seed.store.handoff_number
    assert store.address_changes(order.number) == []


def test_declining_keeps_the_address(seed: Seed, store: SqliteStore, convo: Conversation) -> None:
    order = _orders(seed, "processing")[0]
    convo.start(_phone(seed, order))
    convo.say(f"change my address for order {spell_digits(order.number)}")
    assert "leave the address as it is" in convo.say("no never mind").text
    assert store.address_changes(order.number) == []


@pytest.mark.parametrize("status", ["shipped", "delivered", "cancelled"])
def test_address_change_refused_after_shipping(
    seed: Seed, store: SqliteStore, convo: Conversation, status: str
) -> None:
    order = _orders(seed, status)[0]
    convo.start(_phone(seed, order))
    reply = convo.say(f"can you send order {spell_digits(order.number)} to a different address")
    assert reply.intent == "change_address"
    expected = {"shipped": "can't change its address", "delivered": "already delivered", "cancelled": "cancelled"}
    assert expected[status] in reply.text
    assert reply.expect != "free" or "ZIP code" not in reply.text
    assert store.address_changes(order.number) == []


def test_order_ships_while_the_caller_confirms(seed: Seed, store: SqliteStore, convo: Conversation) -> None:
    """The store refuses (the order shipped meanwhile): the caller hears why, and nothing is changed."""
    order = _orders(seed, "processing")[0]
    convo.start(_phone(seed, order))
    convo.say(f"change the address on order {spell_digits(order.number)}")
    convo.say(ADDRESS)
    store._db.execute("UPDATE orders SET status = 'shipped' WHERE number = ?", (order.number,))
    reply = convo.say("yes")
    assert "already shipped" in reply.text and store.address_changes(order.number) == []


def test_stranger_cannot_change_an_address(seed: Seed, store: SqliteStore, convo: Conversation) -> None:
    order = _orders(seed, "processing")[0]
    convo.start(STRANGER)
    replies = [convo.say(f"i need to change the address on order {spell_digits(order.number)}")]
    assert "privacy" in replies[0].text and replies[0].expect == "digits"
    replies += [convo.say("one two three four five"), convo.say("nobody at example dot com"), convo.say(ADDRESS)]
    replies.append(convo.say("yes"))
    said = _said(replies)
    for secret in ("hasn't shipped", "being prepared", *(p.name.lower() for p in _items(store, order))):
        assert secret not in said
    assert store.address_changes(order.number) == []


def _items(store: SqliteStore, order: Order) -> list[Product]:
    return [p for i in order.items if (p := store.product_for_sku(i.sku)) is not None]


def test_zip_verifies_then_address_changes(seed: Seed, store: SqliteStore, convo: Conversation) -> None:
    order = next(o for o in _orders(seed, "processing") if _customer(seed, o).zip)
    convo.start(STRANGER)
    convo.say(f"change the address for order {spell_digits(order.number)}")
    ask = convo.say(spell_digits(_customer(seed, order).zip or ""))
    assert ask.sentences[0] == "Thank you, that matches." and ask.expect == "address"
    convo.say(ADDRESS)
    convo.say("yes")
    assert len(store.address_changes(order.number)) == 1


# -- a person, or a message outside opening hours ---------------------------------------------------------


def test_inside_hours_a_person_is_a_transfer(seed: Seed, convo: Conversation) -> None:
    convo.start("")
    reply = convo.say("i want to talk to a person")
    assert reply.transfer_to == seed.store.handoff_number and convo.ended


def test_outside_hours_a_message_is_taken(seed: Seed, store: SqliteStore, clock: FixedClock) -> None:
    _night(clock, seed)
    convo = Conversation(Dialog(store), call_id="CAnight")
    convo.start(STRANGER)
    offer = convo.say("can i speak to a representative")
    assert offer.transfer_to is None and not convo.ended and offer.expect == "yes_no"
    assert "isn't available right now" in offer.text and f"We're open {seed.store.hours}." in offer.text
    ask = convo.say("yes please")
    assert ask.expect == "free" and "your name and your message" in ask.text
    done = convo.say("this is sam please call me about my refund")
    assert "passed your message on" in done.text and "number you're calling from" in done.text
    [message] = store.messages()
    assert message.caller_number == STRANGER and message.text == "this is sam please call me about my refund"
    assert message.order_number is None
    assert convo.say("no thanks").end_call


def test_withheld_number_is_asked_for_and_read_back(seed: Seed, store: SqliteStore, clock: FixedClock) -> None:
    _night(clock, seed)
    convo = Conversation(Dialog(store), call_id="CAnight")
    convo.start("")
    convo.say("agent")
    convo.say("yes")
    ask = convo.say("hi it is robin about an exchange")
    assert ask.expect == "digits" and "phone number" in ask.text and store.messages() == []
    done = convo.say("five five five one two three four five six seven")
    assert f"call you back at {say_phone('5551234567')}." in done.text
    [message] = store.messages()
    assert message.caller_number == "5551234567" and message.text == "hi it is robin about an exchange"


def test_withheld_number_keyed_in(seed: Seed, store: SqliteStore, clock: FixedClock) -> None:
    _night(clock, seed)
    convo = Conversation(Dialog(store), call_id="CAnight")
    convo.start("")
    convo.say("can i leave a message")
    convo.say("please call me back")
    assert convo.keys("5551234567").sentences == []
    assert "call you back at" in convo.keys("#").text
    assert [m.caller_number for m in store.messages()] == ["5551234567"]


def test_message_carries_the_verified_order(seed: Seed, store: SqliteStore, clock: FixedClock) -> None:
    order = _orders(seed, "shipped")[0]
    _night(clock, seed)
    convo = Conversation(Dialog(store), call_id="CAnight")
    convo.start(_phone(seed, order))
    convo.say(f"where is my order {spell_digits(order.number)}")
    convo.say("no")
    convo.say("let me talk to someone")
    convo.say("yes")
    convo.say("it is late please call me")
    [message] = store.messages()
    assert message.order_number == order.number and message.caller_number == _phone(seed, order)


@pytest.mark.parametrize("how", ["misunderstood", "zero"])
def test_outside_hours_other_routes_to_a_person_offer_a_message(
    seed: Seed, store: SqliteStore, clock: FixedClock, how: str
) -> None:
    _night(clock, seed)
    convo = Conversation(Dialog(store))
    convo.start("")
    if how == "misunderstood":
        convo.say("purple monkey")
        reply = convo.say("banana telescope")
    else:
        reply = convo.keys("0#")
    assert "leave a message" in reply.text and reply.expect == "yes_no" and reply.transfer_to is None
    assert "Okay." in convo.say("no").text and store.messages() == []


def test_leaving_a_message_inside_hours(seed: Seed, store: SqliteStore, convo: Conversation) -> None:
    convo.start(STRANGER)
    ask = convo.say("i would like to leave a message")
    assert ask.expect == "free" and "message" in ask.text
    convo.say("please call me about a wholesale order")
    assert [m.text for m in store.messages()] == ["please call me about a wholesale order"]


def test_message_words_are_not_commands(seed: Seed, store: SqliteStore, clock: FixedClock) -> None:
    """A message that says "manager" or "bye" is the caller's message, not a request for a transfer or goodbye."""
    _night(clock, seed)
    convo = Conversation(Dialog(store))
    convo.start(STRANGER)
    convo.say("can someone call me back")
    reply = convo.say("tell the manager i called bye")
    assert not convo.ended and "passed your message on" in reply.text
    assert [m.text for m in store.messages()] == ["tell the manager i called bye"]


def test_are_you_open_now(seed: Seed, store: SqliteStore, clock: FixedClock) -> None:
    convo = Conversation(Dialog(store))
    convo.start("")
    assert convo.say("are you open right now").sentences[0] == "Yes, we're open right now."
    _night(clock, seed)
    assert convo.say("are you still open").sentences[0] == "We're closed right now."
    assert convo.say("what are your hours").sentences[0] == f"We're open {seed.store.hours}."


# -- order status, refunds, corrections --------------------------------------------------------------------


def test_processing_order_gets_a_delivery_estimate(seed: Seed, convo: Conversation) -> None:
    order = _orders(seed, "processing")[0]
    convo.start(_phone(seed, order))
    reply = convo.say(f"when will order {spell_digits(order.number)} arrive")
    first = seed.policies.shipping[0]
    assert f"Once it ships, {first.method} shipping takes {first.days}." in reply.sentences


def test_shipped_order_says_the_estimate_and_delivered_says_the_date(
    seed: Seed, store: SqliteStore, convo: Conversation
) -> None:
    shipped = next(o for o in _orders(seed, "shipped") if o.eta and o.eta > store.today() + dt.timedelta(days=1))
    delivered = _orders(seed, "delivered")[0]
    assert shipped.eta and delivered.delivered
    convo.start(_phone(seed, shipped))
    reply = convo.say(f"where is order {spell_digits(shipped.number)}")
    assert f"It should arrive on {say_date(shipped.eta, today=store.today())}." in reply.sentences
    convo = Conversation(convo.dialog)
    convo.start(_phone(seed, delivered))
    reply = convo.say(f"has order {spell_digits(delivered.number)} been delivered")
    assert f"was delivered on {say_date(delivered.delivered, today=store.today())}." in reply.text


def test_refund_question_suggests_the_order_with_a_return(seed: Seed, store: SqliteStore) -> None:
    for customer in seed.customers:
        orders = store.orders_for_customer(customer.id)
        with_return = [o for o in orders if store.returns_for_order(o.number)]
        if not with_return or not customer.phone:
            continue
        convo = Conversation(Dialog(store))
        convo.start(customer.phone)
        ask = convo.say("where is my refund")
        assert convo.state.order_number == with_return[0].number, customer.id
        assert ask.expect == "yes_no"
        answer = convo.say("yes")
        product = store.product_for_sku(store.returns_for_order(with_return[0].number)[0].sku)
        assert product is not None and f"return of the {product.name}" in answer.text


def test_refund_of_a_cancelled_order(seed: Seed, store: SqliteStore, convo: Conversation) -> None:
    order = next(o for o in _orders(seed, "cancelled") if not store.returns_for_order(o.number))
    convo.start(_phone(seed, order))
    reply = convo.say(f"where is my refund for order {spell_digits(order.number)}")
    total = sum(i.price * i.qty for i in order.items)
    assert "was cancelled" in reply.text and say_price(total) in reply.text
    assert seed.policies.refund_days is None or seed.policies.refund_days in reply.text


@pytest.mark.parametrize("correction", ["no that's the wrong number", "no i said {other}", "no it's {other}"])
def test_read_back_number_can_be_corrected(seed: Seed, convo: Conversation, correction: str) -> None:
    heard, meant = seed.orders[0], seed.orders[1]
    convo.start(STRANGER)
    first = convo.say(f"where is order {spell_digits(heard.number)}")
    assert first.sentences[0] == f"I heard {say_order_number(heard.number)}."
    reply = convo.say(correction.format(other=spell_digits(meant.number)))
    if "{other}" in correction:
        assert reply.sentences[0] == f"I heard {say_order_number(meant.number)}."
        assert convo.state.order_number == meant.number
    else:
        assert reply.expect == "digits" and "order number" in reply.text and convo.state.order_number is None
        assert convo.say(spell_digits(meant.number)).sentences[0] == f"I heard {say_order_number(meant.number)}."


def test_no_then_zip_is_an_answer_not_a_correction(seed: Seed, convo: Conversation) -> None:
    order = next(o for o in seed.orders if _customer(seed, o).zip)
    convo.start(STRANGER)
    convo.say(f"where is order {spell_digits(order.number)}")
    reply = convo.say(f"no it's {spell_digits(_customer(seed, order).zip or '')}")
    assert reply.sentences[0] == "Thank you, that matches."


def test_wrong_order_after_status_asks_again(seed: Seed, convo: Conversation) -> None:
    order = next(o for o in seed.orders if o.status in ("processing", "delivered"))
    convo.start(_phone(seed, order))
    convo.say(f"what is the status of order {spell_digits(order.number)}")
    reply = convo.say("no that is not my order")
    assert reply.expect == "digits" and not convo.ended


# -- choosing by colour, size or place; similar products ---------------------------------------------------


def _two_item_store(seed: Seed, clock: FixedClock) -> tuple[SqliteStore, Order]:
    """The store with its first delivered order holding two returnable items of different colours, no returns."""
    order = _orders(seed, "delivered")[0]
    assert order.delivered is not None
    banned = {c.lower() for c in seed.policies.non_returnable_categories}
    variants: list[Variant] = []
    for product in seed.products:
        if product.category.lower() in banned:
            continue
        variant = next((v for v in product.variants if v.color and v.color not in {x.color for x in variants}), None)
        if variant is not None:
            variants.append(variant)
        if len(variants) == 2:
            break
    items = [OrderItem(sku=v.sku, qty=1, price=10.0) for v in variants]
    orders = [msgspec.structs.replace(o, items=items) if o.number == order.number else o for o in seed.orders]
    returns = [r for r in seed.returns if r.order != order.number]
    changed = msgspec.structs.replace(seed, orders=orders, returns=returns)
    clock.now = FixedClock.on(order.delivered + dt.timedelta(days=1), seed.store.timezone, hour=11).now
    store = SqliteStore(changed, clock=clock)
    fresh = store.get_order(order.number)
    assert fresh is not None
    return store, fresh


@pytest.mark.parametrize("how", ["ordinal", "colour"])
def test_return_item_chosen_by_place_or_colour(seed: Seed, clock: FixedClock, how: str) -> None:
    store, order = _two_item_store(seed, clock)
    convo = Conversation(Dialog(store))
    convo.start(_phone(seed, order))
    ask = convo.say(f"i want to return something from order {spell_digits(order.number)}")
    assert ask.expect == "product"
    skus = list(convo.state.candidates)
    assert len(skus) == 2
    variants = {v.sku: v for i in order.items if (p := store.product_for_sku(i.sku)) for v in p.variants}
    if how == "ordinal":
        reply, wanted = convo.say("the second one"), skus[1]
    else:
        wanted = skus[1]
        reply = convo.say(f"the {spoken_form(variants[wanted].color or '')} one")
    product = store.product_for_sku(wanted)
    assert product is not None and reply.expect == "yes_no" and product.name in reply.text
    assert convo.state.sku == wanted
    convo.say("yes")
    assert [r.sku for r in store.returns_for_order(order.number)] == [wanted]


def test_ambiguous_product_chosen_by_place(seed: Seed, store: SqliteStore) -> None:
    by_word: dict[str, list[str]] = {}
    for product in seed.products:
        for word in set(product.name.lower().split()):
            by_word.setdefault(word, []).append(product.id)
    shared = next((w for w, ids in by_word.items() if len(ids) >= 2 and len(w) > 3), None)
    if shared is None:
        pytest.skip("no two product names share a word")
    convo = Conversation(Dialog(store))
    convo.start("")
    ask = convo.say(f"do you have the {shared}")
    if ask.expect != "product" or len(convo.state.candidates) < 2:
        pytest.skip("the store's names are not ambiguous on that word")
    second = store.get_product(convo.state.candidates[1])
    assert second is not None
    assert second.name in convo.say("the second one").text


def test_sold_out_product_offers_similar_ones(seed: Seed, clock: FixedClock) -> None:
    target = next(
        p for p in seed.products if p.category and any(q.id != p.id and q.category == p.category for q in seed.products)
    )
    sold_out = msgspec.structs.replace(
        target, variants=[msgspec.structs.replace(v, stock=0, restock_date=None) for v in target.variants]
    )
    products = [sold_out if p.id == target.id else p for p in seed.products]
    store = SqliteStore(msgspec.structs.replace(seed, products=products), clock=clock)
    similar = [
        p.name
        for p in products
        if p.id != target.id and p.category == target.category and any(v.stock > 0 for v in p.variants)
    ]
    convo = Conversation(Dialog(store))
    convo.start("")
    variant = target.variants[0]
    replies = [convo.say(f"is the {spoken_form(target.name)} in stock")]
    replies.append(convo.say(f"{variant.color or ''} {say_size(variant.size) if variant.size else ''}"))
    assert similar
    for reply in replies:
        assert "sold out" in reply.text or "out of stock" in reply.text
        assert f"If you'd like something similar, we have the {similar[0]}" in reply.text


# -- state and speech --------------------------------------------------------------------------------------


def test_state_round_trips_mid_address_and_mid_message(seed: Seed, store: SqliteStore, clock: FixedClock) -> None:
    order = _orders(seed, "processing")[0]
    steps = [f"change the address on order {spell_digits(order.number)}", ADDRESS, "yes"]
    state = DialogState(call_id="CArt")
    Dialog(store).greet(state, _phone(seed, order))
    for line in steps:
        state = msgspec.json.decode(msgspec.json.encode(state), type=DialogState)
        Dialog(store).on_text(state, line)
    assert [c.address for c in store.address_changes(order.number)] == [ADDRESS_WRITTEN]
    _night(clock, seed)
    for line in ["operator", "yes", "call me please", "five five five one two three four five six seven"]:
        state = msgspec.msgpack.decode(msgspec.msgpack.encode(state), type=DialogState)
        Dialog(store).on_text(state, line)
    assert [m.text for m in store.messages()] == ["call me please"]


_UNSPEAKABLE = re.compile(r"[*_#`\[\]{}<>$|\\~^]|\d{4}-\d{2}-\d{2}|None|\s{2,}|\.\.")


def test_new_sentences_are_speakable(seed: Seed, store: SqliteStore, clock: FixedClock) -> None:
    replies: list[Reply] = []
    for order in seed.orders:
        convo = Conversation(Dialog(store))
        replies.append(convo.start(_phone(seed, order)))
        for line in (f"change the address on order {spell_digits(order.number)}", ADDRESS, "yes", "refund status"):
            replies.append(convo.say(line))
    _night(clock, seed)
    convo = Conversation(Dialog(store))
    convo.start("")
    for line in ("agent", "yes", "call me", "five five five one two three four five six seven", "are you open now"):
        replies.append(convo.say(line))
    for sentence in (s for r in replies for s in r.sentences):
        assert sentence[0].isupper() or sentence[0].isdigit(), sentence
        assert sentence[-1] in ".?!" and not _UNSPEAKABLE.search(sentence), sentence


def test_address_with_no_and_digits_is_an_address_not_a_number_correction(
    seed: Seed, store: SqliteStore, convo: Conversation
) -> None:
    order = _orders(seed, "processing")[0]
    convo.start(_phone(seed, order))
    ask = convo.say(f"change the address on order {spell_digits(order.number)}")
    assert ask.sentences[0].startswith("I heard")  # a read-back just before the address question
    reply = convo.say(f"no it's {ADDRESS}")
    assert reply.sentences[0] == f"I have {ADDRESS_SAID}." and convo.state.order_number == order.number


def test_filler_is_not_a_message(seed: Seed, store: SqliteStore, convo: Conversation) -> None:
    convo.start(STRANGER)
    convo.say("i would like to leave a message")
    again = convo.say("um")
    assert "didn't get a message" in again.text and again.expect == "free" and store.messages() == []
    assert "silence" == convo.silence().intent and store.messages() == []
    convo.say("please call me back about my gift card")
    assert [m.text for m in store.messages()] == ["please call me back about my gift card"]


@pytest.mark.parametrize("question", ["how long do refunds take", "how long does a refund take"])
def test_refund_time_is_a_policy_answer(seed: Seed, convo: Conversation, question: str) -> None:
    convo.start("")
    reply = convo.say(question)
    assert reply.intent == "return_policy" and "order number" not in reply.text
    assert seed.policies.refund_days is None or seed.policies.refund_days in reply.text
