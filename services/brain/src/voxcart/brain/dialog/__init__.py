"""The brain's deterministic rules dialog: state, replies, and the store-derived caller language.

Usage::

    dialog = Dialog(store)
    state = DialogState(call_id=call_sid)
    reply = dialog.greet(state, "+15555550123")
    reply = dialog.on_text(state, "where is my order one zero zero two three", 0.9)

Every method mutates ``state`` in place and returns a :class:`Reply`; ``state`` round-trips through
``msgspec.json``/``msgpack`` at any point and another replica can continue the call from it.
"""

from __future__ import annotations

from voxcart.brain.dialog._conversation import Conversation
from voxcart.brain.dialog._core import Dialog
from voxcart.brain.dialog._state import STATE_VERSION, DialogState, Pending, Reply
from voxcart.brain.language import sample_utterances, vocabulary

__all__ = [
    "STATE_VERSION",
    "Conversation",
    "Dialog",
    "DialogState",
    "Pending",
    "Reply",
    "sample_utterances",
    "vocabulary",
]
