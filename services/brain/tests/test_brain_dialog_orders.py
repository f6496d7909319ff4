"""Order conversations by text, against both stores: status, identity, numbers, cancel, returns, refunds."""

from __future__ import annotations

import datetime as dt

import pytest

from voxcart.brain.dialog import Conversation, Reply
from voxcart.brain.language import spell_digits, spoken_form
from voxcart.brain.numbers import number_words
from voxcart.brain.phrasing import say_date, say_order_number, say_price, say_tracking
from voxcart.brain.store import FixedClock, SqliteStore, check_return
from voxcart.common.seed import Customer, Order, Seed

STRANGER = "+15550009999"


def _orders(seed: Seed, status: str) -> list[Order]:
    return [o for o in seed.orders if o.status == status]


def _customer(seed: Seed, order: Order) -> Customer:
    return next(c for c in seed.customers if c.id == order.customer)


def _phone(seed: Seed, order: Order) -> str:
    phone = _customer(seed, order).phone
    assert phone is not None
    return phone


def _secrets(seed: Seed, store: SqliteStore, order: Order) -> list[str]:
    """Things only the order's customer may hear."""
    names = [p.name for i in order.items if (p := store.product_for_sku(i.sku)) is not None]
    found = [*names, order.status, "deliver", "ship", "cancel", "return"]
    if order.carrier:
        found.append(order.carrier)
    if order.tracking:
        found.append(say_tracking(order.tracking))
    return found


def _assert_no_leak(seed: Seed, store: SqliteStore, order: Order, replies: list[Reply]) -> None:
    said = " ".join(r.text for r in replies).lower()
    for secret in _secrets(seed, store, order):
        assert secret.lower() not in said, f"leaked {secret!r}: {said}"


def test_stranger_never_hears_order_details(seed: Seed, store: SqliteStore, convo: Conversation) -> None:
    assert store.customer_by_phone(STRANGER) is None
    for order in seed.orders:
        convo = Conversation(convo.dialog)
        convo.start(STRANGER)
        asked = convo.say(f"where is my order {spell_digits(order.number)}")
        assert f"I heard {say_order_number(order.number)}." in asked.sentences
        assert asked.expect == "digits" and "zip code" in asked.text.lower()
        wrong = convo.say("one two three four five six seven")
        refused = convo.say("my email is nobody at example dot com")
        assert "transfer" in refused.text and refused.expect == "yes_no"
        replies = [asked, wrong, refused, convo.say("what is the status")]
        _assert_no_leak(seed, store, order, replies)
        assert convo.state.order_number is None and order.customer not in convo.state.verified


@pytest.mark.parametrize("status", ["processing", "shipped", "delivered", "cancelled", "returned"])
def test_verified_caller_hears_status(seed: Seed, store: SqliteStore, convo: Conversation, status: str) -> None:
    order = _orders(seed, status)[0]
    convo.start(_phone(seed, order))
    reply = convo.say(f"where is my order {spell_digits(order.number)}")
    text = reply.text
    assert reply.intent == "order_status"
    assert f"I heard {say_order_number(order.number)}." == reply.sentences[0]
    today = store.today()
    if status == "processing":
        assert "hasn't shipped" in text
    elif status == "shipped":
        assert order.tracking and say_tracking(order.tracking) in text
        assert order.carrier is None or order.carrier in text
        assert order.eta is None or say_date(order.eta, today=today) in text
        assert reply.expect == "yes_no"
        again = convo.say("yes please")
        assert say_tracking(order.tracking) in again.text
        assert convo.say("no").intent == "order_status"
    elif status == "delivered":
        assert order.delivered and say_date(order.delivered, today=today) in text
    else:
        assert status in text
    first = store.product_for_sku(order.items[0].sku)
    if status != "returned":
        assert first is not None and first.name in text


@pytest.mark.parametrize("route", ["zip", "email", "dtmf"])
def test_identity_by_zip_email_or_keys(seed: Seed, store: SqliteStore, convo: Conversation, route: str) -> None:
    order = next(o for o in _orders(seed, "shipped") if _customer(seed, o).zip and _customer(seed, o).email)
    customer = _customer(seed, order)
    assert customer.zip and customer.email
    convo.start(STRANGER)
    ask = convo.say("i want to check on my package")
    assert ask.expect == "digits" and ask.intent == "order_status"
    ask = convo.say(spell_digits(order.number))  # the number comes in the next turn
    assert "privacy" in ask.text
    if route == "zip":
        reply = convo.say(f"it is {spell_digits(customer.zip)}")
    elif route == "email":
        local, domain = customer.email.split("@")
        spoken = f"{local} at {domain}".replace(".", " dot ")
        reply = convo.say(spoken)
    else:
        assert convo.keys(customer.zip[:2]).sentences == []
        reply = convo.keys(customer.zip[2:] + "#")
    assert reply.sentences[0] == "Thank you, that matches."
    assert order.tracking and say_tracking(order.tracking) in reply.text
    assert order.customer in convo.state.verified


def test_wrong_zip_then_right_zip(seed: Seed, convo: Conversation) -> None:
    order = next(o for o in _orders(seed, "delivered") if _customer(seed, o).zip)
    zip_code = _customer(seed, order).zip or ""
    wrong = str((int(zip_code) + 1) % 100000).zfill(len(zip_code))
    convo.start("")
    convo.say(f"order status for {spell_digits(order.number)}")
    reply = convo.say(spell_digits(wrong))
    assert "doesn't match" in reply.text and reply.expect == "digits"
    assert "delivered" not in reply.text
    assert "delivered" in convo.say(spell_digits(zip_code)).text


@pytest.mark.parametrize("form", ["digit words", "oh for zero", "number words", "digits", "dtmf"])
def test_order_number_forms(seed: Seed, convo: Conversation, form: str) -> None:
    order = max(seed.orders, key=lambda o: o.number.count("0"))
    convo.start(_phone(seed, order))
    if form == "digit words":
        reply = convo.say(f"my order number is {spell_digits(order.number)}")
    elif form == "oh for zero":
        reply = convo.say("order " + spell_digits(order.number).replace("zero", "oh"))
    elif form == "number words":
        reply = convo.say(f"where is order {number_words(int(order.number))}")
    elif form == "digits":
        reply = convo.say(f"status of {order.number} please")
    else:
        convo.say("where is my order")
        for key in order.number:
            assert convo.keys(key).sentences == []
        reply = convo.keys("#")
    assert reply.sentences[0] == f"I heard {say_order_number(order.number)}."
    assert convo.state.order_number == order.number


@pytest.mark.parametrize("asked_first", [False, True])
def test_order_heard_as_four_before_the_number(
    seed: Seed, store: SqliteStore, convo: Conversation, asked_first: bool
) -> None:
    """ "order 10023" over the phone often comes out "4 1 0 0 2 3": when only the number without that 4 exists,
    it is the one read back; a stranger still hears nothing about it."""
    order = next(o for o in seed.orders if store.get_order("4" + o.number) is None)
    convo.start(STRANGER)
    if asked_first:
        assert convo.say("where is my order").expect == "digits"
        reply = convo.say(f"it's 4{order.number}")
    else:
        reply = convo.say(f"i'm calling to check on 4{order.number}")
    assert reply.sentences[0] == f"I heard {say_order_number(order.number)}."
    assert convo.state.order_number == order.number
    assert "zip code" in reply.text.lower()
    _assert_no_leak(seed, store, order, [reply])


def test_unknown_order_number_then_offer_human(seed: Seed, convo: Conversation) -> None:
    known = {o.number for o in seed.orders}
    missing = next(str(n) for n in range(98761, 99999) if str(n) not in known)
    convo.start(STRANGER)
    reply = convo.say(f"where is order {spell_digits(missing)}")
    assert reply.sentences[:2] == [
        f"I heard {say_order_number(missing)}.",
        "I couldn't find an order with that number.",
    ]
    assert reply.expect == "digits"
    reply = convo.say(spell_digits(missing))
    assert "still can't find" in reply.text and reply.expect == "yes_no"
    transfer = convo.say("yes")
    assert transfer.transfer_to == seed.store.handoff_number and convo.ended


def test_known_caller_gets_their_order_suggested(seed: Seed, store: SqliteStore, convo: Conversation) -> None:
    order = _orders(seed, "shipped")[0]
    convo.start(_phone(seed, order))
    reply = convo.say("where is my package")
    assert reply.expect == "yes_no" and "Is this about order" in reply.text
    suggested = convo.state.order_number
    assert suggested is not None
    assert store.get_order(suggested) is not None
    follow = convo.say("yes")
    assert f"Order {say_order_number(suggested)}" in follow.text
    convo2 = Conversation(convo.dialog)
    convo2.start(_phone(seed, order))
    convo2.say("where is my package")
    assert convo2.say("no").expect == "digits"


def test_cancel_processing_order(seed: Seed, store: SqliteStore, convo: Conversation) -> None:
    order = _orders(seed, "processing")[0]
    convo.start(_phone(seed, order))
    reply = convo.say(f"i want to cancel order {spell_digits(order.number)}")
    assert reply.intent == "cancel" and reply.expect == "yes_no" and "hasn't shipped" in reply.text
    done = convo.say("yes please")
    total = sum(i.price * i.qty for i in order.items)
    assert "is cancelled" in done.text and say_price(total) in done.text
    cancelled = store.get_order(order.number)
    assert cancelled is not None and cancelled.status == "cancelled"


def test_cancel_declined_keeps_order(seed: Seed, store: SqliteStore, convo: Conversation) -> None:
    order = _orders(seed, "processing")[-1]
    convo.start(_phone(seed, order))
    convo.say(f"cancel {spell_digits(order.number)}")
    assert "won't cancel" in convo.say("no").text
    assert store.get_order(order.number) == order


@pytest.mark.parametrize("status", ["shipped", "delivered"])
def test_cancel_after_shipping_is_refused(seed: Seed, store: SqliteStore, convo: Conversation, status: str) -> None:
    order = _orders(seed, status)[0]
    convo.start(_phone(seed, order))
    reply = convo.say(f"please cancel my order {spell_digits(order.number)}")
    assert "can't cancel" in reply.text and f"{seed.policies.return_window_days} days" in reply.text
    assert store.get_order(order.number) == order


def test_unverified_cancel_needs_identity(seed: Seed, store: SqliteStore, convo: Conversation) -> None:
    order = _orders(seed, "processing")[0]
    convo.start(STRANGER)
    reply = convo.say(f"cancel order {spell_digits(order.number)}")
    assert reply.expect == "digits" and "privacy" in reply.text
    convo.say("yes")
    convo.say("yes")
    assert store.get_order(order.number) == order


def _returnable(seed: Seed, store: SqliteStore) -> tuple[Order, str]:
    for order in _orders(seed, "delivered"):
        assert order.delivered is not None
        for item in order.items:
            product = store.product_for_sku(item.sku)
            returns = store.returns_for_order(order.number)
            if check_return(order, item.sku, product, seed.policies, order.delivered, returns).eligible:
                return order, item.sku
    raise AssertionError("no returnable item")


def _set_today(clock: FixedClock, seed: Seed, day: dt.date) -> None:
    clock.now = FixedClock.on(day, seed.store.timezone, hour=11).now


def test_return_within_window_is_started(
    seed: Seed, store: SqliteStore, clock: FixedClock, convo: Conversation
) -> None:
    order, sku = _returnable(seed, store)
    assert order.delivered is not None
    _set_today(clock, seed, order.delivered + dt.timedelta(days=2))
    product = store.product_for_sku(sku)
    assert product is not None
    convo.start(_phone(seed, order))
    reply = convo.say(f"i want to return something from order {spell_digits(order.number)}")
    if reply.expect == "product":  # several returnable items: the caller picks one
        assert product.name in reply.text
        reply = convo.say(f"the {product.name.lower()}")
    deadline = order.delivered + dt.timedelta(days=seed.policies.return_window_days)
    assert reply.expect == "yes_no" and say_date(deadline, today=store.today()) in reply.text
    before = len(store.returns_for_order(order.number))
    done = convo.say("yes")
    assert f"started a return for the {product.name}" in done.text and "label" in done.text
    returns = store.returns_for_order(order.number)
    assert len(returns) == before + 1 and returns[-1].sku == sku and returns[-1].status == "requested"
    status = convo.say("what is the status of my return")
    assert product.name in status.text and "waiting to receive" in status.text


def test_return_after_window_is_refused(seed: Seed, store: SqliteStore, clock: FixedClock, convo: Conversation) -> None:
    order, _ = _returnable(seed, store)
    assert order.delivered is not None
    deadline = order.delivered + dt.timedelta(days=seed.policies.return_window_days)
    _set_today(clock, seed, deadline + dt.timedelta(days=1))
    convo.start(_phone(seed, order))
    reply = convo.say(f"can i return order {spell_digits(order.number)}")
    assert f"{seed.policies.return_window_days} days" in reply.text and "closed" in reply.text
    assert say_date(deadline, today=store.today()) in reply.text
    assert reply.expect == "free"
    before = store.returns_for_order(order.number)
    convo.say("yes")
    assert store.returns_for_order(order.number) == before


def test_non_returnable_item_is_explained(
    seed: Seed, store: SqliteStore, clock: FixedClock, convo: Conversation
) -> None:
    banned = {c.lower() for c in seed.policies.non_returnable_categories}
    order, product_name, category = next(
        (o, p.name, p.category)
        for o in _orders(seed, "delivered")
        for i in o.items
        if (p := store.product_for_sku(i.sku)) is not None and p.category.lower() in banned
    )
    assert order.delivered is not None
    _set_today(clock, seed, order.delivered + dt.timedelta(days=1))
    convo.start(_phone(seed, order))
    reply = convo.say(f"i want to return order {spell_digits(order.number)}")
    assert f"The {product_name} can't be returned." in reply.sentences
    assert f"Our return policy excludes {category}." in reply.sentences


@pytest.mark.parametrize("status", ["shipped", "processing", "cancelled"])
def test_return_of_undelivered_order(seed: Seed, store: SqliteStore, convo: Conversation, status: str) -> None:
    order = _orders(seed, status)[0]
    convo.start(_phone(seed, order))
    reply = convo.say(f"i want to return order {spell_digits(order.number)}")
    expected = {"shipped": "still on its way", "processing": "hasn't shipped yet", "cancelled": "was cancelled"}
    assert expected[status] in reply.text
    assert store.returns_for_order(order.number) == [r for r in seed.returns if r.order == order.number]


def test_refund_status_of_existing_returns(seed: Seed, store: SqliteStore, convo: Conversation) -> None:
    for ret in seed.returns:
        order = next(o for o in seed.orders if o.number == ret.order)
        convo = Conversation(convo.dialog)
        convo.start(_phone(seed, order))
        reply = convo.say(f"where is my refund for order {spell_digits(order.number)}")
        product = store.product_for_sku(ret.sku)
        assert product is not None and f"return of the {product.name}" in reply.text
        if ret.status == "refunded":
            assert "refunded" in reply.text
            assert ret.refund_amount is not None and say_price(ret.refund_amount) in reply.text
        elif ret.status == "received":
            assert "We received" in reply.text
        elif ret.status == "rejected":
            assert "wasn't accepted" in reply.text


def test_context_carries_to_the_next_question(seed: Seed, store: SqliteStore, convo: Conversation) -> None:
    order = _orders(seed, "shipped")[0]
    convo.start(STRANGER)
    convo.say(f"where is my order {spell_digits(order.number)}")
    customer = _customer(seed, order)
    assert customer.zip
    convo.say(spell_digits(customer.zip))
    convo.say("no")
    reply = convo.say("can i cancel it")  # no number: the order already discussed and verified
    assert "can't cancel" in reply.text and reply.expect == "free"


def test_return_of_a_named_item(seed: Seed, store: SqliteStore, clock: FixedClock, convo: Conversation) -> None:
    order = next(o for o in _orders(seed, "delivered") if len({i.sku for i in o.items}) > 1)
    assert order.delivered is not None
    _set_today(clock, seed, order.delivered + dt.timedelta(days=1))
    named, other = (store.product_for_sku(i.sku) for i in order.items[-1:-3:-1])
    assert named is not None and other is not None
    convo.start(_phone(seed, order))
    reply = convo.say(f"i want to return the {spoken_form(named.name)} from order {spell_digits(order.number)}")
    assert named.name in reply.text and other.name not in reply.text
