"""Product questions: which product, which colour and size, stock, restock dates and alternatives.

Invariants: product questions need no identity; colour and size are remembered per product across turns
("do you have it in black?") and forgotten when the product changes; an out-of-stock answer always says
whether a restock date is known and offers in-stock variants of the same product, or, when the product is sold
out in every option, in-stock products of the same category.
"""

from __future__ import annotations

from typing import Final

from voxcart.brain.dialog._phrases import describe_variant
from voxcart.brain.dialog._state import Reply
from voxcart.brain.dialog._turn import Turn
from voxcart.brain.nlu import CUES, ordinal_choice
from voxcart.brain.numbers import NUMBER_WORDS
from voxcart.brain.phrasing import join_and, join_or, say_day, say_price, say_size
from voxcart.brain.store import COMMON_COLORS, ProductMatch, match_colors, match_size, unknown_colors
from voxcart.brain.text import key_tokens, tokens
from voxcart.common.seed import Product, Variant

__all__ = ["ask_product", "availability", "mentions_variant_of_current", "on_product_answer"]

_LOW_STOCK: Final = 3
_PARTIAL_MARGIN: Final = 1.5
"""Partial name matches this close to the best one are ambiguous: the caller is asked which they mean."""
_GENERIC: Final = frozenset(
    {w for cues in CUES.values() for phrase, _ in cues for w in key_tokens(phrase)}
    | set(
        "a an the i you we do does is are am to of for on in it my your our can could would will be with and or "
        "any what how when where there this that have has me us please one some something thing them those "
        "these want need like get got know tell about hi hello um uh okay ok yes no product item other".split()
    )
)


def _unique(values: list[str | None]) -> list[str]:
    seen: list[str] = []
    for value in values:
        if value and value not in seen:
            seen.append(value)
    return seen


def _sizes_phrase(sizes: list[str]) -> str:
    spoken = [say_size(s) for s in sizes]
    return f"size {spoken[0]}" if len(spoken) == 1 else f"sizes {join_and(spoken)}"


def ask_product(turn: Turn, text: str) -> Reply:
    """No product was recognized: say so if something else was named, and ask which product."""
    turn.state.job = "availability"
    leftover = [
        t for t in tokens(text)
        if key_tokens(t)[0] not in _GENERIC and t not in NUMBER_WORDS and t not in COMMON_COLORS and not t.isdigit()
    ]  # fmt: skip
    categories = _unique([p.category for p in turn.store.products()])
    sentences = ["I'm sorry, I couldn't find that product."] if leftover else []
    if categories:
        sentences.append(f"We carry {join_and(categories)}.")
    return turn.reply(
        sentences, "availability", ask=["Which product are you asking about?"], pending="product", expect="product"
    )


def availability(turn: Turn, text: str, matches: list[ProductMatch]) -> Reply:
    """Answer a product question for the product named in ``text`` (or the one discussed before)."""
    st = turn.state
    st.job = "availability"
    product: Product | None = None
    if matches:
        best = matches[0]
        margin = 0.0 if best.exact else _PARTIAL_MARGIN
        tied = [m for m in matches if m.score >= best.score - margin and m.exact == best.exact]
        if len(tied) > 1:
            st.candidates = [m.product.id for m in tied[:4]]
            names = [f"the {m.product.name}" for m in tied[:4]]
            return turn.reply(
                [], "availability", ask=[f"Do you mean {join_or(names)}?"], pending="product", expect="product"
            )
        product = matches[0].product
    elif st.product_id:
        product = turn.store.get_product(st.product_id)
    if product is None:
        return ask_product(turn, text)
    return _answer(turn, product, text)


def on_product_answer(turn: Turn, text: str) -> Reply | None:
    """The caller named a product (or colour/size) after being asked; None if nothing usable was said."""
    st = turn.state
    matches = turn.store.find_products(text)
    if st.pending == "product" and st.candidates:
        chosen = [m for m in matches if m.product.id in st.candidates]
        if chosen:
            return _answer(turn, chosen[0].product, text)
        index = ordinal_choice(text, len(st.candidates))
        picked = turn.store.get_product(st.candidates[index]) if index is not None else None
        if picked is not None:
            return _answer(turn, picked, text)
    if matches:
        return availability(turn, text, matches)
    if st.pending == "variant" and st.product_id:
        product = turn.store.get_product(st.product_id)
        if product is not None and _mentions_variant(product, text):
            return _answer(turn, product, text)
    return None


def _mentions_variant(product: Product, text: str) -> bool:
    colors = _unique([v.color for v in product.variants])
    sizes = _unique([v.size for v in product.variants])
    return bool(match_colors(text, colors) or match_size(text, sizes) or unknown_colors(text, colors))


def mentions_variant_of_current(turn: Turn, text: str) -> bool:
    """Whether ``text`` names a colour or size of the product under discussion."""
    product = turn.store.get_product(turn.state.product_id or "")
    return product is not None and _mentions_variant(product, text)


def _answer(turn: Turn, product: Product, text: str) -> Reply:
    st = turn.state
    if st.product_id != product.id:
        st.product_id, st.color, st.size = product.id, None, None
    st.candidates = []
    colors = _unique([v.color for v in product.variants])
    sizes = _unique([v.size for v in product.variants])
    said_colors = match_colors(text, colors)
    said_size = match_size(text, sizes)
    if said_colors:
        st.color = said_colors[0]
    if said_size:
        st.size = said_size
    name = product.name
    unknown = [] if said_colors else unknown_colors(text, colors)
    if unknown and colors:
        return turn.reply(
            [f"The {name} doesn't come in {unknown[0]}.", f"It comes in {join_and(colors)}."],
            "availability",
            ask=["Which colour would you like?"],
            pending="variant",
            expect="product",
        )
    color = st.color if len(colors) > 1 else (colors[0] if colors else None)
    size = st.size if len(sizes) > 1 else (sizes[0] if sizes else None)
    need_color = bool(colors) and color is None
    need_size = bool(sizes) and size is None
    if not need_color and not need_size:
        return _one_variant(turn, product, color, size, colors, sizes)
    if not need_color and color is not None and len(colors) > 1:
        return _by_color(turn, product, color)
    if not need_size and size is not None and len(sizes) > 1:
        return _by_size(turn, product, size)
    sentences = [f"The {name} is {say_price(product.price)}."]
    listed_sizes = sizes if len(sizes) > 1 else []
    if colors and listed_sizes:
        sentences.append(f"It comes in {join_and(colors)}, in {_sizes_phrase(listed_sizes)}.")
    elif colors:
        sentences.append(f"It comes in {join_and(colors)}.")
    elif listed_sizes:
        sentences.append(f"It comes in {_sizes_phrase(listed_sizes)}.")
    if not any(v.stock > 0 for v in product.variants):
        sentences.append("It's sold out right now.")
        sentences.extend(_similar_in_stock(turn, product))
    if need_color and need_size:
        question = "Which colour and size would you like?"
    else:
        question = "Which colour would you like?" if need_color else "Which size would you like?"
    return turn.reply(sentences, "availability", ask=[question], pending="variant", expect="product")


def _one_variant(
    turn: Turn, product: Product, color: str | None, size: str | None, colors: list[str], sizes: list[str]
) -> Reply:
    name = product.name
    variant = next(
        (
            v
            for v in product.variants
            if (color is None or (v.color or "").lower() == color.lower())
            and (size is None or (v.size or "").lower() == size.lower())
        ),
        None,
    )
    if variant is None:
        turn.state.size = None
        in_color = _unique([v.size for v in product.variants if v.color == color])
        return turn.reply(
            [f"The {name} in {color} doesn't come in size {say_size(size or '')}.",
             f"In {color}, it comes in {_sizes_phrase(in_color)}."],
            "availability",
            ask=["Which size would you like?"],
            pending="variant",
            expect="product",
        )  # fmt: skip
    detail = describe_variant(variant) if len(product.variants) > 1 else ""
    described = f"the {name}{detail}{',' if ', ' in detail else ''}"
    if variant.stock > 0:
        sentences = [f"Yes, {described} is in stock.", f"It's {say_price(product.price)}."]
        if variant.stock <= _LOW_STOCK:
            sentences.append(f"There {'is' if variant.stock == 1 else 'are'} only {variant.stock} left.")
        return turn.finish(sentences, "availability")
    sentences = [f"I'm sorry, {described} is out of stock right now."]
    sentences.append(_restock(turn, variant))
    sentences.extend(_alternatives(product, variant))
    if not any(v.stock > 0 for v in product.variants):
        sentences.extend(_similar_in_stock(turn, product))
    return turn.finish(sentences, "availability")


def _restock(turn: Turn, variant: Variant) -> str:
    if variant.restock_date is not None and variant.restock_date >= turn.today:
        return f"We expect more {say_day(variant.restock_date, today=turn.today)}."
    return "I don't have a restock date for it."


def _alternatives(product: Product, variant: Variant) -> list[str]:
    in_stock = [v for v in product.variants if v.stock > 0 and v.sku != variant.sku]
    same_color = _unique([v.size for v in in_stock if v.color == variant.color and v.size])
    same_size = _unique([v.color for v in in_stock if v.size == variant.size and v.color])
    sentences = []
    if same_color and variant.color:
        sentences.append(f"In {variant.color}, we have {_sizes_phrase(same_color)}.")
    if same_size and variant.size:
        sentences.append(f"In size {say_size(variant.size)}, it's available in {join_or(same_size)}.")
    if not sentences and in_stock:
        options = [describe_variant(v).strip() for v in in_stock[:3]]
        sentences.append(f"It's in stock {join_or(options)}.")
    if not in_stock:
        sentences.append(f"The {product.name} is sold out in every option right now.")
    return sentences


def _similar_in_stock(turn: Turn, product: Product) -> list[str]:
    """Other products of the same category that have something in stock (at most two), as one sentence."""
    if not product.category:
        return []
    similar = [
        p.name
        for p in turn.store.products()
        if p.id != product.id and p.category == product.category and any(v.stock > 0 for v in p.variants)
    ][:2]
    if not similar:
        return []
    names = join_or([f"the {name}" for name in similar])
    return [f"If you'd like something similar, we have {names} in stock."]


def _by_color(turn: Turn, product: Product, color: str) -> Reply:
    variants = [v for v in product.variants if (v.color or "").lower() == color.lower()]
    in_stock = _unique([v.size for v in variants if v.stock > 0])
    sentences = [
        f"In {color}, the {product.name} is in stock in {_sizes_phrase(in_stock)}."
        if in_stock
        else f"In {color}, the {product.name} is sold out in every size right now."
    ]
    for v in [v for v in variants if v.stock == 0 and v.size][:2]:
        if v.restock_date is not None and v.restock_date >= turn.today:
            sentences.append(
                f"Size {say_size(v.size or '')} is expected back {say_day(v.restock_date, today=turn.today)}."
            )
    if not any(v.stock > 0 for v in product.variants):
        sentences.extend(_similar_in_stock(turn, product))
    return turn.reply(
        sentences, "availability", ask=["Which size would you like?"], pending="variant", expect="product"
    )


def _by_size(turn: Turn, product: Product, size: str) -> Reply:
    variants = [v for v in product.variants if (v.size or "").lower() == size.lower()]
    in_stock = _unique([v.color for v in variants if v.stock > 0])
    spoken = say_size(size)
    sentences = [
        f"In size {spoken}, the {product.name} is in stock in {join_and(in_stock)}."
        if in_stock
        else f"In size {spoken}, the {product.name} is sold out right now."
    ]
    for v in [v for v in variants if v.stock == 0 and v.color][:2]:
        if v.restock_date is not None and v.restock_date >= turn.today:
            sentences.append(
                f"{(v.color or '').capitalize()} is expected back {say_day(v.restock_date, today=turn.today)}."
            )
    if not any(v.stock > 0 for v in product.variants):
        sentences.extend(_similar_in_stock(turn, product))
    return turn.reply(
        sentences, "availability", ask=["Which colour would you like?"], pending="variant", expect="product"
    )
