"""One turn of the dialog: the store, the state and today's date, and the ways a turn can end.

Invariants: every reply is built by :meth:`Turn.reply`, which records in the state what was said, what was
asked (re-asked after silence or a misunderstanding) and what is pending; so the state always describes the
last reply the caller heard. A call is transferred only to the store's handoff number and only while the
store's hours (:func:`~voxcart.brain.hours.parse_hours`) say the team is there (or the hours are unknown);
otherwise the caller is offered to leave a message.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from voxcart.brain.dialog._state import DialogState, Pending, Reply
from voxcart.brain.hours import parse_hours
from voxcart.brain.store import Store
from voxcart.common.events import Expect

__all__ = ["ANYTHING_ELSE", "Turn"]

ANYTHING_ELSE = "Is there anything else I can help you with?"
HELP = "I can check an order, help with a return, look up a product, or answer questions about our policies."


class Turn:
    """The context of one turn.

    Args:
        store: the shop's data.
        state: the call's dialog state (mutated).
        today: today's date in the store's timezone.
        now: the current time in the store's timezone (for opening hours); None when unknown (the team is then
            taken to be there).
    """

    def __init__(self, store: Store, state: DialogState, today: dt.date, now: dt.datetime | None = None) -> None:
        self.store = store
        self.state = state
        self.today = today
        self.now = now

    def reply(
        self,
        sentences: Sequence[str],
        intent: str,
        *,
        ask: Sequence[str] = (),
        pending: Pending = "none",
        expect: Expect = "free",
        end_call: bool = False,
        transfer_to: str | None = None,
    ) -> Reply:
        """Build the reply and record it in the state.

        Args:
            sentences: statements, in order.
            intent: what the turn was about.
            ask: the question(s) closing the reply; remembered as the prompt to repeat.
            pending: what the question waits for.
            expect: what the caller is expected to say next.
            end_call: hang up after speaking.
            transfer_to: transfer after speaking.
        """
        st = self.state
        said = [s for s in [*sentences, *ask] if s]
        st.pending = pending
        st.last_sentences = said
        st.last_prompt = list(ask)
        st.last_expect = expect
        if pending == "none" or pending == "anything_else":
            st.job = None
        if end_call or transfer_to:
            st.ended = True
        return Reply(sentences=said, intent=intent, expect=expect, end_call=end_call, transfer_to=transfer_to)

    def finish(self, sentences: Sequence[str], intent: str) -> Reply:
        """A task is done: say so and ask whether there is anything else."""
        return self.reply(sentences, intent, ask=[ANYTHING_ELSE], pending="anything_else")

    def is_verified(self, customer_id: str) -> bool:
        """Whether the caller proved they are this customer (calling number, ZIP code or email)."""
        return customer_id == self.state.caller_customer or customer_id in self.state.verified

    def team_available(self) -> bool:
        """Whether someone at the store can take a transfer now: a handoff number, and inside opening hours
        (unknown or unreadable hours count as open)."""
        if not self.store.info.handoff_number:
            return False
        hours = parse_hours(self.store.info.hours)
        return hours is None or self.now is None or hours.is_open(self.now)

    def offer_human(self, sentences: Sequence[str], intent: str) -> Reply:
        """Offer a transfer to a person; outside opening hours, a message; without either, say what we can do."""
        if self.team_available():
            return self.reply(
                sentences,
                intent,
                ask=["Would you like me to transfer you to someone on our team?"],
                pending="confirm_transfer",
                expect="yes_no",
            )
        if self.store.info.handoff_number:
            return self.offer_message([*sentences, *self._closed()], intent)
        self.state.misunderstood = 0
        return self.reply([*sentences, HELP], intent, ask=["What would you like to do?"])

    def transfer(self) -> Reply:
        """Hand the call to a person at the store's handoff number; outside hours (or with no number), offer to
        take a message instead."""
        number = self.store.info.handoff_number
        if not number:
            sentences = ["I'm sorry, there's no one available to take your call right now."]
            if self.store.info.hours:
                sentences.append(f"Our team is available {self.store.info.hours}.")
            return self.offer_message(sentences, "human")
        if not self.team_available():
            return self.offer_message(["I'm sorry, our team isn't available right now.", *self._closed()], "human")
        return self.reply(
            ["Sure, let me transfer you to someone on our team.", "One moment, please."],
            "human",
            transfer_to=number,
        )

    def offer_message(self, sentences: Sequence[str], intent: str) -> Reply:
        """Ask whether the caller wants to leave a message for the team."""
        return self.reply(
            sentences,
            intent,
            ask=["Would you like to leave a message so someone can call you back?"],
            pending="confirm_message",
            expect="yes_no",
        )

    def _closed(self) -> list[str]:
        hours = self.store.info.hours
        return [f"We're open {hours}."] if hours else []

    def goodbye(self, sentences: Sequence[str] = ()) -> Reply:
        """End the call politely."""
        name = self.store.info.name
        return self.reply([*sentences, f"Thanks for calling {name}.", "Goodbye!"], "goodbye", end_call=True)
