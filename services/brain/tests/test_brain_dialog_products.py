"""Product conversations by text, against both stores: stock, restock dates, alternatives, context."""

from __future__ import annotations

import datetime as dt

from voxcart.brain.dialog import Conversation
from voxcart.brain.language import spoken_form
from voxcart.brain.phrasing import say_day, say_price, say_size
from voxcart.brain.store import COMMON_COLORS, SqliteStore
from voxcart.common.seed import Product, Seed, Variant


def _multi(seed: Seed) -> list[Product]:
    """Products with more than one colour and more than one size."""
    return [
        p for p in seed.products
        if len({v.color for v in p.variants if v.color}) > 1 and len({v.size for v in p.variants if v.size}) > 1
    ]  # fmt: skip


def _ask(product: Product, variant: Variant) -> str:
    size = spoken_form(say_size(variant.size or ""))
    return f"do you have the {spoken_form(product.name)} in {variant.color} in size {size}"


def test_in_stock_variant(seed: Seed, convo: Conversation) -> None:
    product, variant = next((p, v) for p in _multi(seed) for v in p.variants if v.stock > 0)
    convo.start("")
    reply = convo.say(_ask(product, variant))
    assert reply.intent == "availability"
    assert reply.sentences[0].startswith(
        f"Yes, the {product.name} in {variant.color}, size {say_size(variant.size or '')}"
    )
    assert say_price(product.price) in reply.text
    if variant.stock <= 3:
        assert f"only {variant.stock} left" in reply.text


def test_out_of_stock_with_restock_date_and_alternatives(seed: Seed, store: SqliteStore, convo: Conversation) -> None:
    today = store.today()
    product, variant = next(
        (p, v) for p in _multi(seed) for v in p.variants
        if v.stock == 0 and v.restock_date and v.restock_date >= today
        and any(o.stock > 0 and (o.color == v.color or o.size == v.size) for o in p.variants)
    )  # fmt: skip
    assert variant.restock_date is not None
    convo.start("")
    reply = convo.say(_ask(product, variant))
    assert "out of stock" in reply.sentences[0]
    assert f"We expect more {say_day(variant.restock_date, today=today)}." in reply.sentences
    same_color = [v for v in product.variants if v.color == variant.color and v.stock > 0]
    same_size = [v for v in product.variants if v.size == variant.size and v.stock > 0]
    for alt in same_color:
        assert say_size(alt.size or "") in reply.text
    for alt in same_size:
        assert alt.color is not None and alt.color in reply.text
    for gone in product.variants:
        if gone.stock == 0 and gone.sku != variant.sku and gone.color == variant.color:
            assert (
                f"In {variant.color}, we have" not in reply.text
                or say_size(gone.size or "") not in reply.text.split(f"In {variant.color}, we have")[1].split(".")[0]
            )


def test_out_of_stock_without_restock_date(seed: Seed, convo: Conversation) -> None:
    product, variant = next((p, v) for p in _multi(seed) for v in p.variants if v.stock == 0 and not v.restock_date)
    convo.start("")
    reply = convo.say(_ask(product, variant))
    assert "out of stock" in reply.text and "I don't have a restock date" in reply.text


def test_colour_the_product_does_not_come_in(seed: Seed, convo: Conversation) -> None:
    product = _multi(seed)[0]
    colors = {v.color for v in product.variants}
    missing = sorted(c for c in COMMON_COLORS if c not in colors and c not in ("gray", "grey"))[0]
    convo.start("")
    reply = convo.say(f"is the {spoken_form(product.name)} available in {missing}")
    assert f"doesn't come in {missing}" in reply.text
    for color in colors:
        assert color is not None and color in reply.text
    assert reply.expect == "product"


def test_unknown_product(seed: Seed, convo: Conversation) -> None:
    convo.start("")
    reply = convo.say("do you sell surfboards")
    assert "couldn't find that product" in reply.text and reply.expect == "product"
    categories = {p.category for p in seed.products}
    assert all(c in reply.text for c in categories)
    product = seed.products[0]
    follow = convo.say(spoken_form(product.aliases[0] if product.aliases else product.name))
    assert product.name in follow.text


def test_alias_and_plural_then_colour_then_size(seed: Seed, convo: Conversation) -> None:
    product = next(p for p in _multi(seed) if p.aliases)
    alias = spoken_form(product.aliases[0])
    convo.start("")
    reply = convo.say(f"do you have {alias}s")
    assert product.name in reply.text and say_price(product.price) in reply.text
    assert reply.expect == "product" and convo.state.product_id == product.id
    color = next(v.color for v in product.variants if v.color)
    assert color is not None
    reply = convo.say(color)
    assert reply.sentences[0].startswith(f"In {color}, the {product.name}")
    variant = next(v for v in product.variants if v.color == color)
    reply = convo.say(f"size {spoken_form(say_size(variant.size or ''))}")
    assert f"{product.name} in {color}, size {say_size(variant.size or '')}" in reply.text
    assert ("in stock" in reply.text) == (variant.stock > 0)


def test_context_what_about_another_colour(seed: Seed, convo: Conversation) -> None:
    product = _multi(seed)[0]
    first, other = next(
        (a, b) for a in product.variants for b in product.variants if a.size == b.size and a.color != b.color
    )
    convo.start("")
    convo.say(_ask(product, first))
    reply = convo.say(f"what about in {other.color}")
    assert reply.intent == "availability"
    assert f"{product.name} in {other.color}, size {say_size(other.size or '')}" in reply.text


def test_ambiguous_product_asks_which(seed: Seed, store: SqliteStore, convo: Conversation) -> None:
    words: dict[str, list[str]] = {}
    for product in seed.products:
        for word in {w.lower() for w in spoken_form(product.name).split() if len(w) > 3}:
            words.setdefault(word, []).append(product.id)
    shared = sorted(w for w, ids in words.items() if len(ids) > 1)
    assert shared, "each test store has two products sharing a name word"
    convo.start("")
    reply = convo.say(f"do you have the {shared[0]}")
    assert reply.expect == "product" and reply.text.startswith("Do you mean")
    target = store.get_product(words[shared[0]][1])
    assert target is not None and target.name in reply.text
    follow = convo.say(spoken_form(target.name))
    assert target.name in follow.text and follow.intent == "availability"


def test_single_variant_product(seed: Seed, store: SqliteStore, convo: Conversation) -> None:
    single = [p for p in seed.products if len(p.variants) == 1]
    if not single:
        return
    product = single[0]
    convo.start("")
    reply = convo.say(f"is the {spoken_form(product.name)} in stock")
    if product.variants[0].stock > 0:
        assert reply.sentences[0] == f"Yes, the {product.name} is in stock."
    else:
        assert "out of stock" in reply.text


def test_restock_date_in_the_past_is_not_promised(seed: Seed, store: SqliteStore, convo: Conversation) -> None:
    product, variant = next(
        (p, v) for p in _multi(seed) for v in p.variants if v.stock == 0 and v.restock_date is not None
    )
    assert variant.restock_date is not None
    clock = store.clock
    assert hasattr(clock, "advance")
    days = (variant.restock_date - store.today()).days + 1
    clock.advance(days=days)
    assert store.today() == variant.restock_date + dt.timedelta(days=1)
    convo.start("")
    reply = convo.say(_ask(product, variant))
    assert "I don't have a restock date" in reply.text
