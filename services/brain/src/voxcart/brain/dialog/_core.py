"""The rules dialog: greeting, then one reply per caller utterance, DTMF entry or silence.

Invariants:
- Deterministic: the reply is a function of the state, the input, the store and the clock. The dialog
  object holds no per-call data; all of it is in :class:`DialogState`, which each method mutates in place.
- Order of decisions for text: a strong request for a person, goodbye or repeat wins anywhere (except while a
  message, or an address with numbers in it, is being taken down: those words are the caller's); otherwise a
  correction of an order number just read back; otherwise the answer to the pending question; otherwise the
  best intent; otherwise "not understood". Two misunderstandings in a row offer a person (or, outside opening
  hours, a message); two silences in a row end the call.
- After ``end_call`` or ``transfer_to``, the state is ``ended`` and further input gets an empty reply.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from voxcart.brain.dialog import _address, _handoff, _orders, _policies, _products, _returns
from voxcart.brain.dialog._state import DialogState, Reply
from voxcart.brain.dialog._turn import ANYTHING_ELSE, HELP, Turn
from voxcart.brain.nlu import MIN_SCORE, IntentScore, score_intents, yes_or_no
from voxcart.brain.numbers import longest_digit_run
from voxcart.brain.store import Clock, ProductMatch, Store

__all__ = ["Dialog"]

_CONFIRMS = ("confirm_order", "confirm_cancel", "confirm_return", "repeat_tracking")
_WEAK = ("thanks", "help", "repeat", "unknown")


class Dialog:
    """A deterministic rules dialog over a store.

    Args:
        store: the shop's data and actions.
        clock: where "now" comes from (for today's date and the time-of-day greeting); defaults to the
            store's clock. Pass the store's clock unless you mean them to differ.
        min_confidence: recognizer confidence below which an utterance counts as not understood
            (0 disables the check).
    """

    def __init__(self, store: Store, clock: Clock | None = None, *, min_confidence: float = 0.0) -> None:
        self.store = store
        self._clock = clock or store.clock
        self._tz = ZoneInfo(store.info.timezone)
        self.min_confidence = min_confidence
        self._keyterms: list[str] | None = None

    def keyterms(self, limit: int = 50) -> list[str]:
        """The store's product names and aliases, for recognizers that can boost words (Deepgram keyterms)."""
        if self._keyterms is None:
            names = (n for p in self.store.products() for n in (p.name, *p.aliases))
            self._keyterms = list(dict.fromkeys(n.strip() for n in names if n.strip()))
        return self._keyterms[:limit]

    def stock_phrases(self) -> list[str]:
        """Sentences this dialog says word for word on many calls (greetings, re-prompts, goodbyes): tts
        synthesizes them once at start. Nothing personal: no names, numbers or order details."""
        name = self.store.info.name
        return [
            *(f"Good {part}, and thanks for calling {name}." for part in ("morning", "afternoon", "evening")),
            HELP,
            "How can I help you today?",
            "How can I help you?",
            "Are you still there?",
            "Sorry, I didn't catch that.",
            "I haven't heard anything, so I'll end the call now.",
            f"Thanks for calling {name}.",
            "Goodbye!",
            "Would you like to leave a message so someone can call you back?",
        ]

    def now(self) -> dt.datetime:
        """The current time in the store's timezone."""
        return self._clock().astimezone(self._tz)

    def _turn(self, state: DialogState) -> Turn:
        now = self.now()
        return Turn(self.store, state, now.date(), now)

    def greet(self, state: DialogState, caller_number: str) -> Reply:
        """Open the call: name the shop (and a known caller), say what we can do, ask how to help.

        Args:
            state: a fresh state for the call (mutated).
            caller_number: the calling number (E.164), or "" when withheld.
        """
        turn = self._turn(state)
        state.caller_number = caller_number
        customer = self.store.customer_by_phone(caller_number) if caller_number else None
        state.caller_customer = customer.id if customer else None
        state.greeted = True
        name = self.store.info.name
        if customer is not None:
            opening = f"Hi {customer.name.split()[0]}, thanks for calling {name}."
        else:
            hour = self.now().hour
            part = "morning" if hour < 12 else "afternoon" if hour < 18 else "evening"
            opening = f"Good {part}, and thanks for calling {name}."
        return turn.reply([opening, HELP], "greeting", ask=["How can I help you today?"])

    def on_text(self, state: DialogState, text: str, confidence: float = 1.0) -> Reply:
        """Answer one recognized (or typed) caller utterance.

        Args:
            state: the call's state (mutated).
            text: the utterance; lower-case without punctuation is fine.
            confidence: the recognizer's confidence in ``text`` (0..1).
        """
        if state.ended:
            return Reply(sentences=[], intent="ended")
        turn = self._turn(state)
        state.turns += 1
        state.silences = 0
        if not text.strip() or confidence < self.min_confidence:
            return self._not_understood(turn)
        matches = self.store.find_products(text)
        product_score = 0.0 if not matches else 3.0 if matches[0].exact else 2.0
        top = score_intents(text, product_score=product_score, faq=self.store.policies.faq)[0]
        taking_down = state.pending == "message" or (
            state.pending in ("new_address", "confirm_address") and longest_digit_run(text) is not None
        )
        reply = (
            (None if taking_down else self._global(turn, top))
            or self._pending(turn, text, top)
            or self._route(turn, text, top, matches)
        )
        if reply is None:
            return self._not_understood(turn)
        if reply.intent != "misunderstood":
            state.misunderstood = 0
        return reply

    def on_digits(self, state: DialogState, digits: str) -> Reply:
        """Take DTMF keys: digits accumulate, '*' clears, '#' ends the entry.

        Returns:
            An empty reply while the entry is incomplete; the answer once '#' ends it.
        """
        if state.ended:
            return Reply(sentences=[], intent="ended")
        state.silences = 0
        entry: str | None = None
        for key in digits:
            if key == "#" and entry is None:
                entry, state.digits = state.digits, ""
            elif key == "*":
                state.digits = ""
            elif key.isdigit():
                state.digits += key
        if entry is None:
            return Reply(sentences=[], intent="dtmf", expect="digits")
        state.turns += 1
        return self._on_entry(self._turn(state), entry)

    def on_silence(self, state: DialogState) -> Reply:
        """The caller said nothing after the last reply: re-prompt once, then say goodbye.

        An unfinished DTMF entry is taken as complete.
        """
        if state.ended:
            return Reply(sentences=[], intent="ended")
        turn = self._turn(state)
        if state.digits:
            entry, state.digits = state.digits, ""
            state.silences = 0
            return self._on_entry(turn, entry)
        state.silences += 1
        if state.silences >= 2:
            return turn.goodbye(["I haven't heard anything, so I'll end the call now."])
        prompt = state.last_prompt or ["How can I help you?"]
        return turn.reply(
            ["Are you still there?"], "silence", ask=prompt, pending=state.pending, expect=state.last_expect
        )

    # -- decisions -------------------------------------------------------------------------------------------

    def _global(self, turn: Turn, top: IntentScore) -> Reply | None:
        if top.score < 4:
            return None
        if top.intent == "human":
            return turn.transfer()
        if top.intent == "goodbye":
            return turn.goodbye()
        if top.intent == "repeat":
            return self._repeat(turn)
        return None

    def _pending(self, turn: Turn, text: str, top: IntentScore) -> Reply | None:
        st = turn.state
        pending = st.pending
        strong = top.score >= 3 and top.intent not in _WEAK
        answer = yes_or_no(text)
        capturing = pending in ("message", "callback_number") or (
            pending in ("new_address", "confirm_address") and _address.written_address(text) is not None
        )
        if not capturing and (corrected := _orders.on_correction(turn, text)) is not None:
            return corrected
        if pending == "message":
            return _handoff.on_message(turn, text)
        if pending == "callback_number":
            return _handoff.on_callback_number(turn, text)
        if pending == "confirm_message":
            if answer is True or (answer is False and not strong):
                return _handoff.on_confirm_message(turn, answer)
            return None
        if pending == "new_address":
            if _address.written_address(text) is None and strong:
                return None
            return _address.on_new_address(turn, text)
        if pending == "confirm_address":
            if answer is None and _address.written_address(text) is None and strong:
                return None
            return _address.on_address_answer(turn, text)
        if pending == "order_number":
            number = _orders.order_number_in(text, expecting=True)
            return _orders.on_order_number(turn, number) if number else None
        if pending == "identity":
            return _orders.on_identity(turn, text)
        if pending in _CONFIRMS:
            number = _orders.order_number_in(text) if pending == "confirm_order" else None
            if number:
                return _orders.on_order_number(turn, number)
            if answer is True or (answer is False and not strong):
                return _orders.on_confirm(turn, answer)
            return None
        if pending == "confirm_transfer":
            if answer is True:
                return turn.transfer()
            if answer is False and not strong:
                return turn.reply(["Okay.", HELP], "help", ask=["What can I help you with?"])
            return None
        reply: Reply | None = None
        if pending == "return_item":
            reply = _returns.on_return_item(turn, text)
        elif pending in ("product", "variant") and (not strong or top.intent == "availability"):
            reply = _products.on_product_answer(turn, text)
        if reply is not None:
            return reply
        if pending in ("return_item", "product", "variant") and answer is False and not strong:
            return turn.finish(["Okay."], st.job or "help")
        if pending == "anything_else" and not strong:
            if answer is False:
                return turn.goodbye()
            if answer is True:
                return turn.reply([], "help", ask=["Sure, what can I help you with?"])
        return None

    def _route(self, turn: Turn, text: str, top: IntentScore, matches: list[ProductMatch]) -> Reply | None:
        st = turn.state
        intent = top.intent if top.score >= MIN_SCORE else "unknown"
        if intent in _orders.ORDER_JOBS:
            return _orders.start_order_job(turn, intent, text)
        if intent == "availability":
            return _products.availability(turn, text, matches)
        if intent == "shipping":
            return _policies.shipping(turn, text)
        if intent == "hours":
            return _policies.hours(turn, text)
        if intent == "return_policy":
            return _policies.return_policy(turn)
        if intent == "faq":
            return _policies.faq(turn, text)
        if intent == "human":
            return turn.transfer()
        if intent == "message":
            return _handoff.ask_message(turn)
        if intent == "goodbye":
            return turn.goodbye()
        if intent == "repeat":
            return self._repeat(turn)
        if intent == "help":
            return turn.reply([HELP], "help", ask=["What would you like to do?"])
        if intent == "thanks":
            return turn.reply(["You're welcome!"], "thanks", ask=[ANYTHING_ELSE], pending="anything_else")
        number = _orders.order_number_in(text)
        if number:
            st.job = st.job if st.job in _orders.ORDER_JOBS else "order_status"
            return _orders.on_order_number(turn, number)
        if matches:
            return _products.availability(turn, text, matches)
        if st.product_id and _products.mentions_variant_of_current(turn, text):
            return _products.availability(turn, text, [])
        return None

    def _on_entry(self, turn: Turn, entry: str) -> Reply:
        st = turn.state
        st.silences = 0
        if st.pending in ("identity", "callback_number") and entry:
            if st.pending == "identity":
                reply = _orders.on_identity(turn, entry)
            else:
                reply = _handoff.on_callback_number(turn, entry)
            if reply is not None:
                st.misunderstood = 0
                return reply
        if entry == "0":
            return turn.transfer()
        if len(entry) >= 3:
            st.misunderstood = 0
            st.job = st.job if st.job in _orders.ORDER_JOBS else "order_status"
            return _orders.on_order_number(turn, entry)
        return self._not_understood(turn)

    def _repeat(self, turn: Turn) -> Reply:
        st = turn.state
        sentences = st.last_sentences or [HELP]
        return Reply(sentences=list(sentences), intent="repeat", expect=st.last_expect)

    def _not_understood(self, turn: Turn) -> Reply:
        st = turn.state
        st.misunderstood += 1
        if st.misunderstood >= 2:
            st.misunderstood = 0
            return turn.offer_human(["I'm sorry, I'm having trouble understanding."], "misunderstood")
        prompt = st.last_prompt or ["How can I help you?"]
        return turn.reply(
            ["Sorry, I didn't catch that."], "misunderstood", ask=prompt, pending=st.pending, expect=st.last_expect
        )
