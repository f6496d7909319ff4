"""Taking a message for the team when no one can take the call (outside opening hours, or no handoff number).

Invariants: a message is stored (:meth:`Store.leave_message`) only once the caller has said it, with an
idempotency key derived from the call and the count of messages it left, so a replayed turn stores nothing
twice; it carries the calling number, or the number the caller gives when theirs is withheld, and the order
under discussion only when the caller was verified for it; nothing of the order is said here.
"""

from __future__ import annotations

from typing import Final

from voxcart.brain.dialog._state import Reply
from voxcart.brain.dialog._turn import HELP, Turn
from voxcart.brain.nlu import yes_or_no
from voxcart.brain.numbers import longest_digit_run
from voxcart.brain.phrasing import say_phone
from voxcart.brain.store import ActionRefused
from voxcart.brain.text import tokens

__all__ = ["ask_message", "on_callback_number", "on_confirm_message", "on_message"]

_NOTHING: Final = frozenset({"no", "nothing", "nope", "never mind", "nevermind", "no thanks", "no thank you"})
_FILLERS: Final = frozenset({"um", "uh", "hmm", "er", "erm", "okay", "ok", "yes", "yeah", "sure", "so", "well"})


def ask_message(turn: Turn, sentences: list[str] | None = None) -> Reply:
    """Ask for the message."""
    return turn.reply(
        sentences or [],
        "message",
        ask=["Please tell me your name and your message, and I'll pass it on to our team."],
        pending="message",
        expect="free",
    )


def on_confirm_message(turn: Turn, answer: bool) -> Reply:
    """A yes or no to "would you like to leave a message?"."""
    if answer:
        return ask_message(turn, ["Sure."])
    return turn.reply(["Okay.", HELP], "help", ask=["What can I help you with?"])


def on_message(turn: Turn, text: str) -> Reply:
    """The caller said their message: store it, or first ask for a number to call back when theirs is withheld."""
    st = turn.state
    said = " ".join(tokens(text))
    if not said or said in _NOTHING:
        return turn.reply(["Okay, I won't leave a message."], "message", ask=["What else can I help you with?"])
    if not [w for w in said.split() if w not in _FILLERS]:
        return ask_message(turn, ["Sorry, I didn't get a message."])
    if not st.caller_number:
        st.message = text.strip()
        return turn.reply(
            ["Thank you."],
            "message",
            ask=["What phone number should we call you back on?"],
            pending="callback_number",
            expect="digits",
        )
    return _save(turn, text.strip(), st.caller_number, from_caller_id=True)


def on_callback_number(turn: Turn, text: str) -> Reply | None:
    """The caller gave (or declined to give) a number to call back; None when the answer holds neither."""
    st = turn.state
    number = longest_digit_run(text, min_len=7, homophones=True)
    message = st.message or ""
    if number is not None:
        return _save(turn, message, number, from_caller_id=False)
    if yes_or_no(text) is False:
        return _save(turn, message, "", from_caller_id=False)
    return None


def _save(turn: Turn, text: str, number: str, *, from_caller_id: bool) -> Reply:
    st = turn.state
    order = turn.store.get_order(st.order_number or "") if st.order_number else None
    about = order.number if order is not None and turn.is_verified(order.customer) else None
    key = f"{st.call_id or 'call'}:message:{st.messages_left}"
    try:
        turn.store.leave_message(number, text, key=key, order_number=about)
    except ActionRefused:
        return ask_message(turn, ["Sorry, I didn't get a message."])
    st.messages_left += 1
    st.message = None
    if from_caller_id:
        back = "Someone from our team will call you back at the number you're calling from."
    elif number:
        back = f"Someone from our team will call you back at {say_phone(number)}."
    else:
        back = "Our team will read it as soon as they're in."
    return turn.finish(["Thank you, I've passed your message on to our team.", back], "message")
