"""The sentences callers of any shop say, as data: slotted templates, fixed phrasings, requests built from parts
(opener + lead-in + request, reasons) and a backbone of everyday spoken English.

:func:`voxcart.brain.language.sample_utterances` fills the slots from a store and adds the store's own words.
Invariant: everything is lower-case words without punctuation, contractions written out, numbers as words; slots
are ``{product}``, ``{variant}``, ``{size}``, ``{color}``, ``{number}``, ``{zip}``.
"""

from __future__ import annotations

import itertools
from typing import Final

__all__ = ["BACKBONE", "PHRASINGS", "TEMPLATES", "combined_phrasings"]


def combined_phrasings() -> list[str]:
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

BACKBONE: Final = [
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

TEMPLATES: Final = [
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
    # messages (outside opening hours) and address changes
    "can i leave a message", "i would like to leave a message", "can someone call me back",
    "please have someone call me back", "i want to leave a message for the manager",
    "my new address is {number} main street", "please send it to {number} oak avenue",
    "the new address is {number} park road apartment {zip}",
    "yes", "no", "yes please", "no thanks", "no thank you", "yeah", "yep", "yup", "sure", "okay", "correct",
    "that is correct", "that is right", "yes that is right", "yes that is correct", "no that is wrong",
    "no that is not right", "not right now", "go ahead", "please do", "sure go ahead", "nope", "yeah sure",
    "goodbye", "that is all thank you", "no that is all", "bye", "thank you", "thanks bye", "that is it",
    "can you repeat that", "say that again", "what did you say", "what can you do", "help", "i need help",
    "sorry what were you saying", "what were you saying", "sorry go on", "you were saying",
    # more slotted phrasings
    "do you have any {product}", "do you have the {product} in a {size}", "does the {product} come in {color}",
    "i am looking for {product} in size {size}", "the {product} is too small", "the {product} is too big",
    "i want to exchange the {product}", "when will the {product} be back in stock", "how much are the {product}",
    "i would like to order the {variant}", "can i get the {product} in {color}",
]  # fmt: skip

PHRASINGS: Final = [
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
