"""What callers of a given store are likely to say: a vocabulary and templated sample sentences.

Recognizers narrow their search with these (a pocketsphinx domain language model is built from
:func:`sample_utterances`; :func:`vocabulary` lists the words and phrases it must know).

Callers say the same requests in endless ways, so besides the templates the samples hold requests built from
parts (an opener, a lead-in, a request: "um i was wondering if you could look up order ...", "i would like to
exchange it because it is too small") and, once each, a backbone of everyday spoken English ("i do not know",
"because", "i bought it last week"), so that words and turns no template has still exist in the LM. None of
them are taken from any test corpus. Measured (piper caller, 8 kHz μ-law, demo store, ``voxcart bench speech``'s
clean in-domain sentences): WER on phrasings not in the samples 21.2 % -> 12.3 %, on those in them 4.3 % ->
3.3 %; 1176 samples instead of 464, the decoder of a speaking call 9.3 MB instead of 9.0 MB.

Invariants: both are deterministic functions of the store (same store, same lists, same order); all text is
lower-case words without punctuation (hyphens become spaces, digits are spelled out, contractions written
out: recognizers add the contracted forms themselves) -- the form a recognizer produces; every intent of
:mod:`voxcart.brain.nlu` has sample sentences; every product name and alias, colour and size of the store
occurs in them, in several phrasings, whatever the store sells; order numbers and ZIP codes are made-up
digit strings said the ways callers say them (digit by digit, "oh" for zero, "double", in groups, as
numbers), so no customer data ends up in a language model.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable, Iterator
from typing import Final

from voxcart.brain.nlu import CUES
from voxcart.brain.numbers import number_words
from voxcart.brain.phrasing import country_name, say_size, size_phrases
from voxcart.brain.store import Store
from voxcart.brain.text import normalize
from voxcart.common.seed import Product

__all__ = ["catalogue", "sample_utterances", "say_digits", "spell_digits", "spoken_form", "vocabulary"]

_DIGIT_WORDS: Final = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
_EXTRA_WORDS: Final = [
    "yes", "no", "yeah", "yep", "yup", "nope", "sure", "okay", "please", "thanks", "thank you", "correct",
    "right", "wrong", "oh", "double", "triple", "hundred", "thousand", "at", "dot", "com", "zip code", "email",
    "order number", "pound", "hello", "hi", "um", "uh", "actually",
]  # fmt: skip
_LETTER_SIZES: Final = frozenset({"s", "m", "l", "os"})
"""Size codes that are not said as letters ("size m" is "size medium")."""


def spell_digits(value: str) -> str:
    """Digits as words, one by one ("10023" -> "one zero zero two three")."""
    return " ".join(_DIGIT_WORDS[int(ch)] for ch in value if ch.isdigit())


def say_digits(value: str, style: int) -> str:
    """A digit string as a caller may say it; ``style`` (any int, taken modulo 5) picks the way.

    0: digit by digit ("one zero zero two three"); 1: "oh" for zero ("one oh oh two three");
    2: "double"/"triple" for repeats ("one double oh two three"); 3: the first two digits as a number, then
    digit by digit ("ten oh two three"); 4: as a number ("ten thousand twenty three", up to 6 digits).
    A style that does not apply (no zero, no repeat, a leading zero) falls back to digit by digit.
    """
    digits = "".join(ch for ch in value if ch.isdigit())
    style %= 5
    if style == 1 and "0" in digits:
        return " ".join("oh" if d == "0" else _DIGIT_WORDS[int(d)] for d in digits)
    if style == 2 and any(a == b for a, b in itertools.pairwise(digits)):
        words: list[str] = []
        for digit, group in itertools.groupby(digits):
            n = len(list(group))
            while n >= 2:
                take = 3 if n == 3 else 2
                words += ["triple" if take == 3 else "double", "oh" if digit == "0" else _DIGIT_WORDS[int(digit)]]
                n -= take
            words += [_DIGIT_WORDS[int(digit)]] * n
        return " ".join(words)
    tens = len(digits) >= 4 and digits[0] != "0" and (digits[1] != "0" or digits[0] == "1" or digits[2] == "0")
    if style == 3 and tens:  # "twenty" + "three" would merge into 23, so "20" is said this way only before "oh"
        rest = " ".join("oh" if d == "0" else _DIGIT_WORDS[int(d)] for d in digits[2:])
        return f"{number_words(int(digits[:2]))} {rest}"
    if style == 4 and 4 <= len(digits) <= 6 and digits[0] != "0":
        return number_words(int(digits))
    return spell_digits(digits)


def spoken_form(text: str) -> str:
    """Text as a recognizer would hear it: normalized, numbers as words ("Size 10.5" -> "size ten point five")."""
    words = []
    for word in normalize(text).split():
        if word.isdigit() and int(word) < 1_000_000:
            words.append(number_words(int(word)))
        elif "." in word:
            whole, _, frac = word.partition(".")
            words.append(f"{number_words(int(whole))} point {spell_digits(frac)}")
        else:
            words.append(word)
    return " ".join(words)


def _names(product: Product) -> list[str]:
    return list(dict.fromkeys(spoken_form(n) for n in [product.name, *product.aliases] if spoken_form(n)))


def _colors(product: Product) -> list[str]:
    return list(dict.fromkeys(spoken_form(v.color) for v in product.variants if v.color))


def _sizes(product: Product) -> list[str]:
    return list(dict.fromkeys(spoken_form(say_size(v.size)) for v in product.variants if v.size))


def _size_words(size: str) -> list[str]:
    """Spoken forms of ``size`` a caller may use, without bare letter codes ("size m")."""
    out = []
    for phrase in size_phrases(size):
        words = spoken_form(phrase).split()
        if words and words[0] == "size":
            words = words[1:]
        if words and not (len(words) == 1 and words[0] in _LETTER_SIZES):
            out.append(spoken_form(phrase))
    return out


def vocabulary(store: Store) -> list[str]:
    """Words and phrases a caller of ``store`` is likely to say, sorted and without duplicates.

    Includes product names and aliases, colours, spoken sizes, digit and number words, the intent cue
    phrases, yes/no words and the countries the store ships to.
    """
    phrases: set[str] = set(_DIGIT_WORDS) | set(_EXTRA_WORDS)
    phrases.update(number_words(n) for n in range(10, 100, 10))
    phrases.update(number_words(n) for n in range(11, 20))
    for product in store.products():
        phrases.update(_names(product))
        phrases.update(_colors(product))
        for variant in product.variants:
            if variant.size:
                phrases.update(_size_words(variant.size))
    for cues in CUES.values():
        phrases.update(normalize(phrase) for phrase, _ in cues)
    phrases.update(normalize(country_name(c)) for c in store.policies.ships_to)
    phrases.update(normalize(option.method) for option in store.policies.shipping)
    phrases.discard("")
    return sorted(phrases)


def catalogue(store: Store) -> dict[str, list[str]]:
    """What a caller may answer to "which product / colour / size?", for recognizers' product grammars.

    Returns:
        ``{"names": [...], "colors": [...], "sizes": [...]}``: spoken product names and aliases, colours, and
        spoken sizes ("medium", "extra large", "ten and a half", "twelve ounce"), each sorted, no duplicates.
    """
    products = store.products()
    names = {n for p in products for n in _names(p)}
    colors = {c for p in products for c in _colors(p)}
    sizes = {w.removeprefix("size ") for p in products for v in p.variants if v.size for w in _size_words(v.size)}
    return {"names": sorted(names), "colors": sorted(colors), "sizes": sorted(s for s in sizes if s)}


def _cycle(items: Iterable[str]) -> Iterator[str]:
    pool = list(items) or [""]
    return itertools.cycle(pool)


def sample_utterances(store: Store, *, per_template: int = 3) -> list[str]:
    """A few hundred caller sentences for ``store``, covering every intent (deterministic).

    Args:
        store: the shop whose products, colours, sizes and policies fill the templates (order numbers and
            ZIP codes are made-up digit strings, so no customer data ends up in a language model).
        per_template: how many fills of each slotted template to produce.

    Returns:
        Lower-case sentences without punctuation, without duplicates, in a stable order.
    """
    products = store.products()
    rng = random.Random(len(products))
    names = _cycle(n for p in products for n in _names(p))
    colors = _cycle(c for p in products for c in _colors(p))
    sizes = _cycle(s for p in products for s in _sizes(p))
    combos = _cycle(
        f"{color} {name}|{size}"
        for p in products
        for color, size in itertools.zip_longest(_colors(p), _sizes(p), fillvalue="")
        for name in _names(p)[:2]
    )
    lengths = itertools.cycle((5, 6, 5, 4, 5, 6, 7, 5))
    styles = itertools.count()
    numbers = (say_digits(str(rng.randrange(10 ** (n - 1), 10**n)), next(styles)) for n in lengths)
    zips = (say_digits(f"{rng.randrange(100000):05d}", next(styles) % 3) for _ in itertools.count())
    out: list[str] = []

    def add(template: str, n: int = per_template) -> None:
        for _ in range(n if "{" in template else 1):
            combo = next(combos).split("|")
            text = template.format(
                product=next(names), variant=combo[0].strip(), size=combo[1] or next(sizes) or "medium",
                color=next(colors) or "blue", number=next(numbers), zip=next(zips),
            )  # fmt: skip
            out.append(" ".join(text.split()))

    for template in _TEMPLATES:
        add(template)
    out.extend(_PHRASINGS)
    for template in _combined_phrasings():
        add(template, 1)
    out.extend(_BACKBONE)
    for product in products:
        for i, name in enumerate(_names(product)):
            out.append(f"do you have the {name} in stock" if i % 2 == 0 else f"i am looking for the {name}")
        for size in _sizes(product):
            out += [f"size {size}", size]
        for color in _colors(product):
            out += [f"in {color}", f"the {color} one"]
    for entry in store.policies.faq:
        out.append(normalize(entry.question))
    for code in store.policies.ships_to:
        out.append(f"do you ship to {normalize(country_name(code)).removeprefix('the ')}")
    for option in store.policies.shipping:
        out.append(f"how much is {normalize(option.method)} shipping")
    return list(dict.fromkeys(s for s in out if s))


def _combined_phrasings() -> list[str]:
    """Caller requests built from parts: an opener, a lead-in and a request, (slotted) templates.

    Every request is said with several lead-ins and openers (cycled, not the full product, to keep the LM small),
    so the LM knows how callers wrap a request ("um i was wondering if you could", "hi i am calling to") around
    any of them, not only around the ones a template happens to pair.
    """
    out: list[str] = []
    openers = itertools.cycle(_OPENERS)
    for requests, lead_ins in ((_ACTIONS, _ACTION_LEAD_INS), (_QUESTIONS, _QUESTION_LEAD_INS)):
        leads = itertools.cycle(lead_ins)
        for request in requests:
            out.append(request)
            for _ in range(_LEAD_INS_PER_REQUEST):
                out.append(f"{next(openers)} {next(leads)} {request}".strip())
    reasons = itertools.cycle(_REASONS)
    for clause in _REASON_CLAUSES:
        for _ in range(3):
            out.append(f"{clause} {next(reasons)}".strip())
    for reason in _REASONS:
        out.append(reason)
    return out


_LEAD_INS_PER_REQUEST: Final = 4
_OPENERS: Final = [
    "", "um", "uh", "hi", "hello", "yeah", "so", "okay so", "hi um", "hey", "well", "yes", "hi there", "uh yeah",
    "good morning", "sorry", "um so", "oh",
]  # fmt: skip
_ACTION_LEAD_INS: Final = [
    "i am calling to", "i would like to", "i want to", "i need to", "i was wondering if i could", "can i",
    "could i", "i am trying to", "i just wanted to", "i was hoping to", "i am calling because i want to",
    "i was calling to", "is it possible to", "how do i", "how can i", "i would love to", "i wanted to",
    "please help me", "can you help me", "i have to",
]  # fmt: skip
_ACTIONS: Final = [
    # orders
    "check on my order", "check on order {number}", "check the status of my order", "find out where my order is",
    "get an update on my order", "get an update on order {number}", "ask about my order", "ask about order {number}",
    "follow up on my order", "follow up on order {number}", "track my order", "track order {number}",
    "find my package", "see when my order will get here", "know when order {number} will arrive",
    # returns and exchanges
    "return the {product}", "return my {product}", "return a {product}", "send back the {product}",
    "send the {product} back", "return something", "return an order", "return order {number}",
    "exchange the {product}", "exchange my {product} for a {size}", "get a refund", "get a refund for the {product}",
    "get my money back", "start a return", "swap the {product} for another size",
    # cancel and changes
    "cancel my order", "cancel order {number}", "cancel the {product}", "cancel the order i placed",
    "change my order", "change order {number}", "change my address", "change the shipping address",
    "update my address", "update my shipping address", "update my order", "change the delivery address on my order",
    # products
    "buy the {product}", "buy a {variant}", "order the {variant}", "order a {product} in {size}",
    "get the {product} in {color}", "find a {product}", "ask about the {product}",
    "find out if you have the {product} in {size}", "find out if the {product} comes in {color}",
    "find out how much the {product} costs",
    # people and policies
    "talk to someone", "talk to a person", "speak to a representative", "speak with someone",
    "speak to a manager", "ask about your return policy", "ask about shipping", "ask a question",
    "know your hours",
]  # fmt: skip
_QUESTION_LEAD_INS: Final = [
    "can you", "could you", "would you", "can you please", "could you please", "i was wondering if you could",
    "is there any way you could", "i need you to", "i would like you to", "do you think you could",
]  # fmt: skip
_QUESTIONS: Final = [
    "check on my order", "look up my order", "look up order {number}", "tell me where my order is",
    "tell me when order {number} will arrive", "check the status of order {number}", "cancel order {number}",
    "cancel my order", "help me return the {product}", "help me with a return", "send me a new one",
    "send me the right size", "send it to my new address", "change the address on my order",
    "transfer me to a person", "put me through to someone", "tell me your return policy",
    "tell me how much shipping is", "tell me if the {product} is in stock", "check if you have the {product}",
    "check if the {variant} is in stock in {size}", "tell me what colors the {product} comes in",
    "repeat that", "say that again", "help me",
]  # fmt: skip
_REASON_CLAUSES: Final = [
    "i want to return it because", "i need to send it back because", "i would like to exchange it because",
    "", "the problem is", "i think", "it is just that", "well",
]  # fmt: skip
_REASONS: Final = [
    "it is too small", "it is too big", "they are too small", "they are too big", "it does not fit",
    "they do not fit", "it is the wrong size", "i got the wrong size", "i ordered the wrong size",
    "it is the wrong color", "it came damaged", "it was damaged", "it is broken", "i do not like it",
    "i do not need it anymore", "i changed my mind", "it was a gift", "it is not what i ordered",
    "it looks different from the picture", "the size runs small", "the size runs large", "it never arrived",
]  # fmt: skip

_BACKBONE: Final = [
    # everyday conversation: the most frequent spoken-English words and turns, so that words outside the
    # templates ("because", "bought", "stuff", "moved") exist in the LM, with little weight
    "i think so", "i do not think so", "i do not know", "i am not sure", "i guess so", "let me see",
    "let me check", "hold on a second", "one second please", "just a minute", "wait a minute", "okay that is fine",
    "that is fine", "that is good", "that sounds good", "that would be great", "that works for me", "all right",
    "oh okay", "oh i see", "i see", "got it", "okay got it", "perfect", "great thanks", "awesome thank you",
    "no problem", "no worries", "sorry about that", "sorry i did not hear you", "i mean", "you know what",
    "i bought it last week", "i bought them a few days ago", "i bought a new pair", "a pair of them",
    "i got it yesterday", "it came yesterday", "it came today", "it just came", "i moved last month",
    "i just moved", "i have a new address", "all my stuff", "some of my stuff", "i have some stuff to send back",
    "my son", "my daughter", "my wife", "my husband", "for my friend", "it was for my mom",
    "because it is late", "because i need it", "because i am not home", "because i was not home",
    "so what do i do now", "what do i do", "what should i do", "what happens now", "what happens next",
    "how does that work", "how long will that take", "is that okay", "is that possible", "is that right",
    "that is not right", "that is not what i said", "that is not it", "no not that one", "the other one",
    "this one", "that one", "the first one", "the second one", "the last one", "the same one", "a different one",
    "i want that one", "i do not want it", "i do not need that", "i want it",
    "i like it", "i really like it", "i love it", "really", "really good", "very much", "a lot", "a little",
    "too much", "not too bad", "pretty good", "it is fine", "it is okay", "that is great", "good good",
    "can you hear me", "are you there", "hello are you there", "i can not hear you", "you are breaking up",
    "i already did that", "i already told you", "i tried that", "i still need help", "never mind",
    "forget it", "it does not matter", "it is okay", "maybe later", "maybe", "probably", "i think that is it",
    "that is about it", "anything else", "nothing else", "something else", "one more thing", "also",
    "and also", "oh and", "but", "or", "if", "when", "then", "again", "still", "already", "soon", "today",
    "tomorrow", "yesterday", "next week", "last week", "right now", "as soon as possible",
    "how much will it cost", "what is the charge",
    "what is the policy", "what about", "how about", "what if", "why", "why not", "how come", "where",
    "who", "which one", "what kind", "how many", "how long", "what time", "what day", "what was that",
    "you said", "you told me", "they told me", "he said", "she said", "we need", "we want", "they want",
    "it says", "the website says", "the email says", "on the website", "in the email", "online", "on the phone",
    "good", "bad", "new", "old", "big", "small", "better", "same", "different", "other", "another", "more",
    "less", "first", "last", "next", "other one", "best", "right", "left", "back", "up", "down", "here", "there",
    "go", "come", "get", "give", "take", "make", "see", "look", "find", "tell", "ask", "keep", "let", "put",
    "send", "pay", "paid", "buy", "sell", "use", "try", "call", "called", "wait", "work", "need", "want", "like",
    "know", "think", "say", "said", "mean", "hear", "heard", "thing", "things", "stuff", "time", "day", "week",
    "month", "year", "money", "card", "credit card", "price", "box", "mail", "phone", "home", "house", "store",
    "website", "account", "name",
]  # fmt: skip
"""General spoken English (not the shop's), mixed in once: a backbone for phrasings no template has."""

_TEMPLATES: Final = [
    # order status
    "where is my order", "where is my order {number}", "i want to check the status of order {number}",
    "what is the status of my order", "track my package", "when will my order arrive", "has my order shipped",
    "my order number is {number}", "{number}", "it is {number}", "the order number is {number}",
    "i have not received my package", "can you give me the tracking number", "i am calling about my order",
    "hi i am calling about an order", "can you check on my order", "my order has not arrived yet",
    "can you tell me where my package is", "i want to know where my order is", "um it is {number}",
    "yes it is {number}", "order {number}", "i think it is {number}",
    # identity
    "my zip code is {zip}", "{zip}", "the zip code is {zip}", "it is {zip}", "zip code {zip}",
    "my email is jay smith at example dot com", "it is robin at mail dot com",
    # returns and refunds
    "i want to return my {product}", "how do i return the {product}", "i want to return order {number}",
    "can i return my order", "i need to send back the {product}", "i want to make a return",
    "the {product} does not fit", "i would like to return the {product}", "how do i return something",
    "where is my refund", "what is the status of my return", "when will i get my refund", "did you get my return",
    "i still have not gotten my refund", "i want to exchange the {product} for a different size",
    # cancel
    "cancel my order", "i want to cancel order {number}", "please cancel my order", "can i cancel my order",
    "i would like to cancel my order please",
    # products
    "do you have the {variant} in size {size}", "is the {variant} in stock", "do you have {product} in stock",
    "how much is the {product}", "how much does the {product} cost", "is the {product} available in {size}",
    "what colors does the {product} come in", "what sizes do you have for the {product}", "what about in {size}",
    "do you have it in {size}", "do you have the {product} in {color}", "do you sell {product}",
    "i am looking for a {variant}", "i will take the {color} one in {size}", "{size} please", "the {color} one",
    "the {color} one please", "in {color} please", "a {size}", "i need a {size}", "do you have it in {color}",
    # policies
    "what is your return policy", "how long do i have to return something", "how long does shipping take",
    "how much is shipping", "do you have express shipping", "what are your hours", "when are you open",
    "are you open on saturday", "are you open on sunday", "what time do you close", "do you ship to my country",
    # people, yes/no, goodbye, repeat, help
    "i want to talk to a person", "can i speak to a human", "transfer me to an agent", "representative",
    "operator", "let me talk to someone", "can i speak to a representative", "i need to talk to a manager",
    "actually i want to talk to a person",
    "yes", "no", "yes please", "no thanks", "no thank you", "yeah", "yep", "yup", "sure", "okay", "correct",
    "that is correct", "that is right", "yes that is right", "yes that is correct", "no that is wrong",
    "no that is not right", "not right now", "go ahead", "please do", "sure go ahead", "nope", "yeah sure",
    "goodbye", "that is all thank you", "no that is all", "bye", "thank you", "thanks bye", "that is it",
    "can you repeat that", "say that again", "what did you say", "what can you do", "help", "i need help",
    # more slotted phrasings
    "do you have any {product}", "do you have the {product} in a {size}", "does the {product} come in {color}",
    "i am looking for {product} in size {size}", "the {product} is too small", "the {product} is too big",
    "i want to exchange the {product}", "when will the {product} be back in stock", "how much are the {product}",
    "i would like to order the {variant}", "can i get the {product} in {color}",
]  # fmt: skip

_PHRASINGS: Final = [
    # greetings and openers
    "hi", "hello", "hi there", "hello there", "good morning", "good afternoon", "i have a question",
    "i need some help with an order", "what can you help me with", "what are my options",
    # order status
    "i am calling to check on my order", "i am trying to find out what happened to my order",
    "can you look up my order", "could you look up my order for me", "i want to know the status of my order",
    "what is going on with my order", "my order still has not shipped", "my order is late",
    "it has been two weeks and i still do not have my order", "when is my order going to arrive",
    "when will it be delivered", "when is it going to be delivered", "is my order on the way", "has it shipped yet",
    "the tracking says it was delivered but i did not get it", "i never got my package",
    "my package did not arrive", "i have not gotten my order yet", "i placed an order last week",
    "i ordered something a few days ago", "can i get the tracking number", "which carrier is it with",
    # returns, exchanges, refunds
    "i would like to return something", "i need to return an item", "how do i send it back", "it does not fit",
    "it is too small", "it is too big", "they are too big", "they are too small", "i got the wrong size",
    "i received the wrong item", "the item arrived damaged", "i would like to exchange it for a different size",
    "can i exchange it for a bigger size", "can i exchange it for a smaller size", "can i return it",
    "i want my money back", "has my refund been processed", "i have not received my refund yet",
    "how long does a refund take", "when will i get my money back",
    # cancel and changes
    "i changed my mind and want to cancel", "i would like to cancel the order i just placed", "can you cancel it",
    "please cancel it", "is it too late to cancel", "can i change my order", "can i change the size on my order",
    "i need to change my shipping address", "can i change the delivery address", "i was charged twice",
    # products
    "do you have it in another color", "what colors does it come in", "what sizes does it come in",
    "is it in stock", "is it available", "when will it be back in stock", "how much does it cost", "how much is it",
    "i would like to buy something", "i want to place an order",
    # policies, hours
    "what is your return window", "how many days do i have to return it", "can i return something after thirty days",
    "do you offer free shipping", "how much does shipping cost", "what is the shipping cost",
    "how long does it take to ship", "how fast can i get it", "do you ship internationally", "what time do you open",
    "what time do you open tomorrow", "are you open today", "are you open on the weekend",
    "what are your hours today",
    # people
    "can i talk to a real person", "get me a human", "i want to speak to someone",
    "i would like to speak with a manager", "can you transfer me to customer service",
    "is there someone i can talk to", "agent please",
    "representative please", "operator please",
    # repeat, thanks, goodbye
    "sorry what was that", "could you repeat that please", "can you say that again please", "i did not catch that",
    "pardon", "come again", "that is everything thank you", "that is all i needed", "thanks for your help",
    "thank you so much", "okay bye", "have a nice day", "no that is it", "nothing else thanks",
]  # fmt: skip
"""Unslotted caller phrasings: the function words and turns of phrase callers wrap requests in."""
