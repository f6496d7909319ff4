"""A call's dialog driven in-process: one :class:`Dialog` and one :class:`DialogState`, with a transcript.

Used by text chat (``voxcart chat``) and tests; the bus-driven service calls :class:`Dialog` directly.
Invariant: the transcript holds every caller input and every non-empty reply, in order.
"""

from __future__ import annotations

from voxcart.brain.dialog._core import Dialog
from voxcart.brain.dialog._state import DialogState, Reply

__all__ = ["Conversation"]


class Conversation:
    """One call's dialog and transcript.

    Args:
        dialog: the dialog to drive.
        state: the state to continue from (a fresh one by default).
        call_id: the call's id, used in idempotency keys of store actions.
    """

    def __init__(self, dialog: Dialog, state: DialogState | None = None, *, call_id: str = "chat") -> None:
        self.dialog = dialog
        self.state = state if state is not None else DialogState(call_id=call_id)
        self.transcript: list[tuple[str, str]] = []
        """``(speaker, text)`` pairs; speaker is "caller" or "agent"."""

    def start(self, caller_number: str = "") -> Reply:
        """Answer the call (greeting)."""
        return self._record(self.dialog.greet(self.state, caller_number))

    def say(self, text: str, confidence: float = 1.0) -> Reply:
        """The caller says ``text``."""
        self.transcript.append(("caller", text))
        return self._record(self.dialog.on_text(self.state, text, confidence))

    def keys(self, digits: str) -> Reply:
        """The caller presses keys (DTMF); '#' ends an entry."""
        self.transcript.append(("caller", f"[keys {digits}]"))
        return self._record(self.dialog.on_digits(self.state, digits))

    def silence(self) -> Reply:
        """The caller says nothing."""
        self.transcript.append(("caller", "[silence]"))
        return self._record(self.dialog.on_silence(self.state))

    @property
    def ended(self) -> bool:
        """The call is over (goodbye or transfer)."""
        return self.state.ended

    def _record(self, reply: Reply) -> Reply:
        if reply.sentences:
            self.transcript.append(("agent", reply.text))
        return reply
