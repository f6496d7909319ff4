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
- A store that fails mid-turn (a :class:`~voxcart.brain.store.StoreError` no step handled: the database is
  down) never loses the call: the failure is logged with the call sid, the state goes back to how it was before
  the turn (so the next turn asks the store again), and the caller hears a short apology and the offer of a
  person (a transfer inside opening hours, else a message); a request for a person, or a yes or no to that
  offer, is still answered. When it was the message itself that could not be saved, the call is transferred if
  there is a handoff number (even outside hours: a person's voicemail beats a lost message), else ended
  politely. This is the one place for both modes: LLM mode falls back to :meth:`Dialog.on_text` when a tool's
  store call fails.
"""

from __future__ import annotations

import copy
import datetime as dt
import logging
from collections.abc import Callable
from zoneinfo import ZoneInfo

from prometheus_client import Counter

from voxcart.brain.dialog import _address, _handoff, _orders, _policies, _products, _returns
from voxcart.brain.dialog._state import DialogState, Reply
from voxcart.brain.dialog._turn import ANYTHING_ELSE, HELP, Turn
from voxcart.brain.nlu import MIN_SCORE, IntentScore, score_intents, yes_or_no
from voxcart.brain.numbers import longest_digit_run
from voxcart.brain.store import Clock, ProductMatch, Store, StoreError

__all__ = ["Dialog"]

log = logging.getLogger("voxcart.brain.dialog")

STORE_FAILURES = Counter("voxcart_brain_store_failures", "Turns the store failed in (the caller was offered a person)")

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
        """The store's product names and aliases, for recognizers that can boost words (Deepgram keyterms);
        none while the store fails (asked again next time)."""
        if self._keyterms is None:
            try:
                products = self.store.products()
            except StoreError as exc:
                log.warning("no keyterms: the store failed: %s", exc)
                return []
            names = (n for p in products for n in (p.name, *p.aliases))
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
        try:
            customer = self.store.customer_by_phone(caller_number) if caller_number else None
        except StoreError as exc:  # greet anyway; the caller can still prove who they are later
            STORE_FAILURES.inc()
            log.warning("the store failed at the greeting: %s", exc, extra={"call_sid": state.call_id})
            customer = None
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
        return self._guarded(state, lambda: self._on_text(state, text, confidence), counts=True, text=text)

    def _on_text(self, state: DialogState, text: str, confidence: float) -> Reply:
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
        return self._guarded(state, lambda: self._on_digits(state, digits), counts=True)

    def _on_digits(self, state: DialogState, digits: str) -> Reply:
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
        return self._guarded(state, lambda: self._on_silence(state), counts=False)

    def _on_silence(self, state: DialogState) -> Reply:
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

    # -- a failing store ---------------------------------------------------------------------------------------

    def _guarded(
        self, state: DialogState, answer: Callable[[], Reply], *, counts: bool, text: str | None = None
    ) -> Reply:
        """``answer()``, or, when the store fails during it, the apology (see the module invariants).

        Args:
            state: the call's state (restored to its value before ``answer`` when the store fails).
            answer: the turn.
            counts: the turn counts as one of the caller's (text, a DTMF entry), not a silence.
            text: what the caller said, if they spoke: a request for a person, or the answer to the offer of one,
                is still served without the store.
        """
        before = copy.deepcopy(state)
        try:
            return answer()
        except StoreError as exc:
            STORE_FAILURES.inc()
            log.warning(
                "the store failed during a turn (%s), the caller is offered a person: %s",
                type(exc).__name__,
                exc,
                extra={"call_sid": state.call_id},
            )
            for field in state.__struct_fields__:
                setattr(state, field, getattr(before, field))
            state.digits = ""  # an entry that failed is not taken again by the next key or silence
            state.turns += 1 if counts else 0
            state.silences = 0
            turn = self._turn(state)
            saving_message = before.pending in ("message", "callback_number")  # the words were the message
            if text is not None and not saving_message and (served := self._without_store(turn, text)) is not None:
                return served
            return self._store_failed(turn, saving_message=saving_message)

    def _without_store(self, turn: Turn, text: str) -> Reply | None:
        """What needs no store: a person asked for, or a yes or no to the offer of a person or of a message."""
        pending = turn.state.pending
        answer = yes_or_no(text)
        top = score_intents(text, faq=self.store.policies.faq)[0]
        if (top.intent == "human" and top.score >= MIN_SCORE) or (pending == "confirm_transfer" and answer is True):
            return turn.transfer()
        if pending == "confirm_message" and answer is not None:
            return _handoff.on_confirm_message(turn, answer)
        if pending == "confirm_transfer" and answer is False:
            return turn.reply(["Okay.", HELP], "help", ask=["What can I help you with?"])
        return None

    def _store_failed(self, turn: Turn, *, saving_message: bool) -> Reply:
        """The apology for a failed store: offer a person, or, when a message could not be saved, hand over or end."""
        number = self.store.info.handoff_number
        if saving_message:
            sorry = "I'm sorry, I couldn't save your message because of a problem on our side."
            if number:
                return turn.reply(
                    [sorry, "Let me transfer you to someone on our team."], "store_error", transfer_to=number
                )
            return turn.goodbye([sorry, "Please try calling again a little later."])
        sorry = "I'm sorry, I'm having trouble with our system right now."
        if number:
            return turn.offer_human([sorry], "store_error")
        return turn.offer_message([sorry], "store_error")

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
        """Say the last reply again: what the caller heard of it (a reply cut by a barge-in is remembered only up
        to the sentence cut), then its question if that was not heard, so the caller knows what is asked."""
        st = turn.state
        sentences = list(st.last_sentences) or [HELP]
        sentences += [ask for ask in st.last_prompt if ask not in sentences]
        st.last_sentences = list(sentences)
        return Reply(sentences=sentences, intent="repeat", expect=st.last_expect)

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
