"""Returns: eligibility per item, which item, starting a return, and explaining refusals.

Invariants: only reached for a verified caller's order (see :mod:`._orders`); eligibility comes from
:func:`~voxcart.brain.store.check_return`, the same rule :meth:`Store.create_return` enforces, so what the
caller is told is what the store does; a return is created only after the caller said yes, with an
idempotency key derived from the call, the order and the item.
"""

from __future__ import annotations

from voxcart.brain.dialog._phrases import item_name, return_sentences
from voxcart.brain.dialog._state import Reply
from voxcart.brain.dialog._turn import Turn
from voxcart.brain.nlu import ordinal_choice
from voxcart.brain.phrasing import join_or, say_date, say_day, say_order_number, say_price
from voxcart.brain.store import (
    ActionRefused,
    OrderNotFound,
    ReturnCheck,
    check_return,
    match_colors,
    match_size,
    open_return_for,
)
from voxcart.common.seed import Order

__all__ = ["do_return", "on_return_item", "return_flow"]


def return_flow(turn: Turn, order: Order, prefix: list[str], only_sku: str | None = None) -> Reply:
    """Tell a verified caller what of ``order`` can be returned, and offer to start the return."""
    st = turn.state
    st.job = "return"
    number = say_order_number(order.number)
    policies = turn.store.policies
    window = policies.return_window_days
    if order.status == "processing":
        st.job = "cancel"
        return turn.reply(
            [*prefix, f"Order {number} hasn't shipped yet, so there's nothing to return, but I can cancel it."],
            "return",
            ask=["Would you like me to cancel it?"],
            pending="confirm_cancel",
            expect="yes_no",
        )
    if order.status == "shipped":
        return turn.finish(
            [
                *prefix,
                f"Order {number} is still on its way.",
                f"Once it arrives, you'll have {window} days to return it.",
            ],
            "return",
        )
    if order.status == "cancelled":
        return turn.finish([*prefix, f"Order {number} was cancelled, so there's nothing to return."], "return")
    returns = turn.store.returns_for_order(order.number)
    if order.status == "returned":
        return turn.finish(
            [*prefix, f"Order {number} has already been returned.", *return_sentences(turn, returns)], "return"
        )
    if only_sku is None and st.item_hint:
        hinted = [i.sku for i in order.items if (p := turn.store.product_for_sku(i.sku)) and p.id == st.item_hint]
        if hinted:
            only_sku = hinted[0]
        elif (product := turn.store.get_product(st.item_hint)) is not None:
            prefix = [*prefix, f"I don't see the {product.name} on order {number}."]
    checks = [
        check_return(order, item.sku, turn.store.product_for_sku(item.sku), policies, turn.today, returns)
        for item in order.items
        if only_sku is None or item.sku == only_sku
    ]
    eligible = [c for c in checks if c.eligible]
    if eligible and len(eligible) < len(checks):
        prefix = [*prefix, *_refusals(turn, order, [c for c in checks if not c.eligible])]
    if len(eligible) == 1:
        return _offer_return(turn, order, eligible[0], prefix)
    if len(eligible) > 1:
        st.candidates = [c.sku for c in eligible]
        names = [f"the {item_name(turn, c.sku)}" for c in eligible]
        return turn.reply(
            [
                *prefix,
                f"Order {number} can be returned until {_until(turn, eligible[0])}.",
            ],
            "return",
            ask=[f"Which item would you like to return: {join_or(names)}?"],
            pending="return_item",
            expect="product",
        )
    return turn.finish([*prefix, *(_refusals(turn, order, checks) or ["I'm sorry, that can't be returned."])], "return")


def _until(turn: Turn, check: ReturnCheck) -> str:
    return say_date(check.deadline or turn.today, today=turn.today)


def _refusals(turn: Turn, order: Order, checks: list[ReturnCheck]) -> list[str]:
    sentences: list[str] = []
    policies = turn.store.policies
    for check in checks:
        name = item_name(turn, check.sku)
        if check.verdict == "window_closed" and order.delivered and check.deadline:
            delivered = say_day(order.delivered, today=turn.today)
            sentences.append(f"The {name} was delivered {delivered}.")
            sentences.append(
                f"Our return window is {policies.return_window_days} days, "
                f"so it closed {say_day(check.deadline, today=turn.today)}."
            )
        elif check.verdict == "non_returnable":
            sentences.append(f"The {name} can't be returned.")
            sentences.append(f"Our return policy excludes {check.category}.")
        elif check.verdict == "has_return":
            ret = open_return_for(turn.store.returns_for_order(order.number), check.sku)
            if ret is not None:
                sentences.extend(return_sentences(turn, [ret]))
    return sentences


def _offer_return(turn: Turn, order: Order, check: ReturnCheck, prefix: list[str]) -> Reply:
    st = turn.state
    st.sku = check.sku
    policies = turn.store.policies
    sentences = [
        *prefix,
        f"Your {item_name(turn, check.sku)} can be returned until {_until(turn, check)}.",
    ]
    if policies.returnable_conditions:
        conditions = " and ".join(policies.returnable_conditions)
        sentences.append(f"It needs to be {conditions}.")
    return turn.reply(
        sentences, "return", ask=["Would you like me to start the return?"], pending="confirm_return", expect="yes_no"
    )


def on_return_item(turn: Turn, text: str) -> Reply | None:
    """The caller chose which item to return, by name ("the hoodie"), colour or size ("the blue one") or place
    ("the second one"); None if no single offered item was meant."""
    st = turn.state
    order = turn.store.get_order(st.order_number or "")
    if order is None or not turn.is_verified(order.customer):
        return None
    sku = _chosen_item(turn, text, st.candidates)
    return return_flow(turn, order, [], only_sku=sku) if sku is not None else None


def _chosen_item(turn: Turn, text: str, skus: list[str]) -> str | None:
    offered = [(sku, turn.store.product_for_sku(sku)) for sku in skus]
    for match in turn.store.find_products(text):
        named = [sku for sku, p in offered if p is not None and p.id == match.product.id]
        if named:
            return named[0]
    variants = {v.sku: v for _, p in offered if p is not None for v in p.variants if v.sku in skus}
    colors = match_colors(text, [v.color for v in variants.values() if v.color])
    size = match_size(text, [v.size for v in variants.values() if v.size])
    if colors or size:
        fitting = [
            sku
            for sku in skus
            if (v := variants.get(sku)) is not None
            and (not colors or v.color in colors)
            and (size is None or v.size == size)
        ]
        if len(fitting) == 1:
            return fitting[0]
    index = ordinal_choice(text, len(skus))
    return skus[index] if index is not None else None


def do_return(turn: Turn, order: Order) -> Reply:
    """Start the return the caller agreed to (idempotent per call, order and item)."""
    st = turn.state
    sku = st.sku or ""
    key = f"{st.call_id or 'call'}:return:{order.number}:{sku}"
    try:
        ret = turn.store.create_return(order.number, sku, key=key)
    except (ActionRefused, OrderNotFound):
        return return_flow(turn, order, [])
    refund_days = turn.store.policies.refund_days
    sentences = [
        f"I've started a return for the {item_name(turn, sku)}.",
        "We'll email you a prepaid return label.",
        "Pack the item, attach the label, and drop it off with the carrier.",
    ]
    if ret.refund_amount is not None and refund_days:
        sentences.append(
            f"Your refund of {say_price(ret.refund_amount)} will arrive within {refund_days} of us receiving it."
        )
    return turn.finish(sentences, "return")
