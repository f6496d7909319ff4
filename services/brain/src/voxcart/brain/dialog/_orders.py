"""Order tasks: status, returns, refund status, cancellation and address changes, behind the identity check.

Invariants:
- Nothing about an order (status, items, dates, carrier, tracking, returns) is said, and nothing is done to
  it, unless :meth:`Turn.is_verified` holds for its customer. An unverified caller hears only that the
  number exists or not, and is asked for the ZIP code or email on file.
- Every order number taken from the caller is read back ("I heard 1 0 0 2 3."); the caller confirms it by going
  on, or corrects it ("no, that's the wrong number", "no, it's 1 0 0 2 4"), which asks for it again.
- Return eligibility comes from :func:`~voxcart.brain.store.check_return`, the same rule the store enforces.
"""

from __future__ import annotations

from voxcart.brain.dialog._address import address_flow
from voxcart.brain.dialog._phrases import describe_items, return_sentences, status_sentences
from voxcart.brain.dialog._returns import do_return, return_flow
from voxcart.brain.dialog._state import Reply
from voxcart.brain.dialog._turn import Turn
from voxcart.brain.nlu import extract_email, extract_zip, is_correction
from voxcart.brain.numbers import longest_digit_run
from voxcart.brain.phrasing import say_date, say_order_number, say_price, say_tracking
from voxcart.brain.store import ActionRefused, OrderNotFound
from voxcart.common.seed import Order

__all__ = [
    "ORDER_JOBS",
    "ask_order_number",
    "on_correction",
    "on_confirm",
    "on_identity",
    "on_order_number",
    "order_number_in",
    "start_order_job",
]

ORDER_JOBS = ("order_status", "return", "refund_status", "cancel", "change_address")
_ASK_NUMBER = "You can say it one digit at a time, or key it in and press pound."


def order_number_in(text: str, *, expecting: bool = False) -> str | None:
    """An order number (3+ digits) in what the caller said; homophones count only when one is expected."""
    return longest_digit_run(text, min_len=3, homophones=expecting)


def ask_order_number(turn: Turn, sentences: list[str] | None = None) -> Reply:
    """Ask for the order number."""
    return turn.reply(
        sentences or ["Sure, I can help with that."],
        turn.state.job or "order_status",
        ask=["What's the order number?", _ASK_NUMBER],
        pending="order_number",
        expect="digits",
    )


def start_order_job(turn: Turn, job: str, text: str) -> Reply:
    """Begin an order task: use a number in ``text``, the order already discussed, or ask for one."""
    st = turn.state
    st.job = job
    named = turn.store.find_products(text)
    st.item_hint = named[0].product.id if named else None
    number = order_number_in(text)
    if number:
        return on_order_number(turn, number)
    if st.order_number:
        order = turn.store.get_order(st.order_number)
        if order is not None and turn.is_verified(order.customer):
            return _run(turn, order, [])
    if st.caller_customer:
        suggestion = _suggest(turn, job, st.caller_customer)
        if suggestion is not None:
            st.order_number = suggestion.number
            placed = say_date(suggestion.placed, today=turn.today, weekday=False)
            return turn.reply(
                [],
                job,
                ask=[f"Is this about order {say_order_number(suggestion.number)}, placed {placed}?"],
                pending="confirm_order",
                expect="yes_no",
            )
    return ask_order_number(turn)


def _suggest(turn: Turn, job: str, customer_id: str) -> Order | None:
    orders = turn.store.orders_for_customer(customer_id)
    if job == "refund_status":  # the newest order with a return, else the newest cancelled one
        with_return = [o for o in orders if turn.store.returns_for_order(o.number)]
        return next(iter(with_return), None) or next((o for o in orders if o.status == "cancelled"), None)
    wanted = {
        "order_status": ("processing", "shipped", "delivered"),
        "return": ("delivered",),
        "cancel": ("processing",),
        "change_address": ("processing",),
    }[job]
    for order in orders:
        if order.status in wanted:
            return order
    return None


def on_order_number(turn: Turn, number: str, *, heard: bool = True) -> Reply:
    """The caller gave an order number: look it up, then verify or serve."""
    st = turn.state
    job = st.job or "order_status"
    st.job = job
    order = turn.store.get_order(number)
    if order is None and number.startswith("4") and (shorter := turn.store.get_order(number[1:])) is not None:
        # "order 10023" / "for 10023" heard as "four 1 0 0 2 3": a confusion of the phone band, not a guess of
        # the caller's; the number is read back below, and nothing is told before identity is verified
        order, number = shorter, number[1:]
    prefix = [f"I heard {say_order_number(number)}."] if heard else []
    if order is None:
        st.order_attempts += 1
        st.order_number = None
        if st.order_attempts >= 2:
            return turn.offer_human([*prefix, "I still can't find an order with that number."], job)
        return turn.reply(
            [*prefix, "I couldn't find an order with that number."],
            job,
            ask=["Could you say it again, one digit at a time, or key it in?"],
            pending="order_number",
            expect="digits",
        )
    st.order_attempts = 0
    if st.order_number != number:
        st.identity_attempts = 0
    st.order_number = number
    if not turn.is_verified(order.customer):
        return turn.reply(
            [*prefix, "To protect your privacy, I need to confirm it's your order."],
            job,
            ask=["Please say or key in the ZIP code on the order, or tell me the email address we have on file."],
            pending="identity",
            expect="digits",
        )
    return _run(turn, order, prefix)


def on_correction(turn: Turn, text: str) -> Reply | None:
    """The caller says the order number just read back is wrong: take the number they give, or ask again.

    Returns:
        None unless the last reply read an order number back and ``text`` corrects it.
    """
    st = turn.state
    heard = bool(st.last_sentences) and st.last_sentences[0].startswith("I heard ")
    if not heard or not is_correction(text):
        return None
    st.new_address = None
    number = order_number_in(text, expecting=True)
    if number is not None and st.pending == "identity" and turn.store.get_order(number) is None:
        return None  # "no, it's 3 0 3 0 1" to the identity question: a ZIP code, not another order
    if number is not None:
        return on_order_number(turn, number)
    st.order_number = None
    return ask_order_number(turn, ["Sorry about that."])


def on_identity(turn: Turn, text: str) -> Reply | None:
    """The caller answered the identity question; None when the answer holds no ZIP code or email."""
    st = turn.state
    order = turn.store.get_order(st.order_number or "")
    if order is None:
        return ask_order_number(turn)
    customer = turn.store.get_customer(order.customer)
    zip_code = extract_zip(text)
    email = extract_email(text)
    if zip_code is None and email is None:
        return None
    on_file_zip = "".join(ch for ch in (customer.zip or "") if ch.isdigit()) if customer else ""
    zip_ok = bool(zip_code and on_file_zip and zip_code in (on_file_zip, on_file_zip[:5]))
    email_ok = bool(email and customer and customer.email and email == customer.email.lower())
    if zip_ok or email_ok:
        st.verified.append(order.customer)
        st.identity_attempts = 0
        return _run(turn, order, ["Thank you, that matches."])
    st.identity_attempts += 1
    if st.identity_attempts >= 2:
        st.order_number = None
        job = st.job or "order_status"
        return turn.offer_human(
            ["I'm sorry, that doesn't match our records, so I can't share details of that order."], job
        )
    return turn.reply(
        ["That doesn't match what we have on file for that order."],
        st.job or "order_status",
        ask=["Please try the ZIP code again, or the email address."],
        pending="identity",
        expect="digits",
    )


def _run(turn: Turn, order: Order, prefix: list[str]) -> Reply:
    job = turn.state.job or "order_status"
    if job == "return":
        return return_flow(turn, order, prefix)
    if job == "refund_status":
        returns = turn.store.returns_for_order(order.number)
        if not returns and order.status == "cancelled":
            return turn.finish([*prefix, *_cancelled_refund(turn, order)], job)
        if not returns:
            return return_flow(turn, order, [*prefix, "I don't see a return on that order yet."])
        return turn.finish([*prefix, *return_sentences(turn, returns)], job)
    if job == "cancel":
        return _cancel(turn, order, prefix)
    if job == "change_address":
        return address_flow(turn, order, prefix)
    sentences = [*prefix, *status_sentences(turn, order)]
    if order.status == "shipped" and order.tracking:
        sentences.append(f"The tracking number is {say_tracking(order.tracking)}.")
        return turn.reply(
            sentences,
            "order_status",
            ask=["Would you like me to repeat the tracking number?"],
            pending="repeat_tracking",
            expect="yes_no",
        )
    return turn.finish(sentences, "order_status")


def _cancelled_refund(turn: Turn, order: Order) -> list[str]:
    number = say_order_number(order.number)
    total = sum(item.price * item.qty for item in order.items)
    sentences = [f"Order {number} was cancelled, so the full {say_price(total)} is refunded."]
    refund_days = turn.store.policies.refund_days
    if refund_days:
        sentences.append(f"The refund goes back to your original payment within {refund_days} of the cancellation.")
    return sentences


def _cancel(turn: Turn, order: Order, prefix: list[str]) -> Reply:
    number = say_order_number(order.number)
    if order.status == "processing":
        return turn.reply(
            [*prefix, f"Order {number}, with {describe_items(turn, order)}, hasn't shipped yet."],
            "cancel",
            ask=["Would you like me to cancel it?"],
            pending="confirm_cancel",
            expect="yes_no",
        )
    if order.status == "cancelled":
        return turn.finish([*prefix, f"Order {number} is already cancelled."], "cancel")
    if order.status == "returned":
        return turn.finish([*prefix, f"Order {number} was already returned, so it can't be cancelled."], "cancel")
    window = turn.store.policies.return_window_days
    reason = "has already shipped" if order.status == "shipped" else "was already delivered"
    return turn.finish(
        [
            *prefix,
            f"Order {number} {reason}, so I can't cancel it.",
            f"You can return it within {window} days of delivery.",
        ],
        "cancel",
    )


def on_confirm(turn: Turn, answer: bool) -> Reply:
    """A yes or no to the pending confirmation (order, cancel, return, tracking)."""
    st = turn.state
    pending = st.pending
    order = turn.store.get_order(st.order_number or "")
    if pending == "confirm_order":
        if answer and order is not None:
            return on_order_number(turn, order.number, heard=False)
        st.order_number = None
        return ask_order_number(turn, ["Okay."])
    if pending == "repeat_tracking":
        if answer and order is not None and order.tracking:
            return turn.reply(
                [f"The tracking number is {say_tracking(order.tracking)}."],
                "order_status",
                ask=["Would you like me to repeat it again?"],
                pending="repeat_tracking",
                expect="yes_no",
            )
        return turn.finish([], "order_status")
    if order is None or not turn.is_verified(order.customer):
        return ask_order_number(turn)
    if pending == "confirm_cancel":
        return _do_cancel(turn, order) if answer else turn.finish(["Okay, I won't cancel it."], "cancel")
    if not answer:
        return turn.finish(["Okay, I won't start a return."], "return")
    return do_return(turn, order)


def _do_cancel(turn: Turn, order: Order) -> Reply:
    number = say_order_number(order.number)
    try:
        turn.store.cancel_order(order.number)
    except ActionRefused:
        fresh = turn.store.get_order(order.number) or order
        return _cancel(turn, fresh, [])
    except OrderNotFound:
        return ask_order_number(turn)
    total = sum(item.price * item.qty for item in order.items)
    refund_days = turn.store.policies.refund_days
    sentences = [f"Done. Order {number} is cancelled."]
    if refund_days:
        sentences.append(f"Your refund of {say_price(total)} will be back on your card within {refund_days}.")
    return turn.finish(sentences, "cancel")
