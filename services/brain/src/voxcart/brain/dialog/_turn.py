"""One turn of the dialog: the store, the state and today's date, and the ways a turn can end.

Invariants: every reply is built by :meth:`Turn.reply`, which records in the state what was said, what was
asked (re-asked after silence or a misunderstanding) and what is pending; so the state always describes the
last reply the caller heard.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from voxcart.brain.dialog._state import DialogState, Pending, Reply
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
    """

    def __init__(self, store: Store, state: DialogState, today: dt.date) -> None:
        self.store = store
        self.state = state
        self.today = today

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

    def offer_human(self, sentences: Sequence[str], intent: str) -> Reply:
        """Offer a transfer to a person (or, without a handoff number, say what we can do)."""
        if self.store.info.handoff_number:
            return self.reply(
                sentences,
                intent,
                ask=["Would you like me to transfer you to someone on our team?"],
                pending="confirm_transfer",
                expect="yes_no",
            )
        self.state.misunderstood = 0
        return self.reply([*sentences, HELP], intent, ask=["What would you like to do?"])

    def transfer(self) -> Reply:
        """Hand the call to a person at the store's handoff number."""
        number = self.store.info.handoff_number
        if not number:
            hours = self.store.info.hours
            sentences = ["I'm sorry, there's no one available to take your call right now."]
            if hours:
                sentences.append(f"Our team is available {hours}.")
            return self.finish(sentences, "human")
        return self.reply(
            ["Sure, let me transfer you to someone on our team.", "One moment, please."],
            "human",
            transfer_to=number,
        )

    def goodbye(self, sentences: Sequence[str] = ()) -> Reply:
        """End the call politely."""
        name = self.store.info.name
        return self.reply([*sentences, f"Thanks for calling {name}.", "Goodbye!"], "goodbye", end_call=True)
