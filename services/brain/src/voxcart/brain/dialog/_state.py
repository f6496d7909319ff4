"""What the dialog remembers between turns, and what it answers with.

Invariants:
- :class:`DialogState` is the whole memory of a call's dialog: plain data, serializable with msgspec (JSON
  or msgpack) and restorable on another replica; the :class:`~voxcart.brain.dialog.Dialog` keeps nothing
  per call. It is mutated in place by each ``Dialog`` method.
- ``verified`` only grows during a call: a customer id enters it when the calling number matches, or the
  caller gave that customer's ZIP code or email.
- A :class:`Reply` with no sentences means "say nothing" (e.g. a DTMF digit while an entry is incomplete).
"""

from __future__ import annotations

from typing import Final, Literal

import msgspec

from voxcart.common.events import Expect

__all__ = ["STATE_VERSION", "DialogState", "Pending", "Reply"]

STATE_VERSION: Final = 1

Pending = Literal[
    "none",
    "order_number",
    "identity",
    "confirm_order",
    "confirm_transfer",
    "confirm_cancel",
    "confirm_return",
    "return_item",
    "product",
    "variant",
    "repeat_tracking",
    "anything_else",
    "new_address",
    "confirm_address",
    "confirm_message",
    "message",
    "callback_number",
]
"""What the last reply asked the caller for."""


class DialogState(msgspec.Struct, kw_only=True):
    """A call's dialog memory (see the module invariants)."""

    v: int = STATE_VERSION
    call_id: str = ""
    """Stable id of the call (the CallSid); part of idempotency keys of store actions."""
    caller_number: str = ""
    caller_customer: str | None = None
    """The customer whose phone matches the calling number, if any."""
    verified: list[str] = msgspec.field(default_factory=list)
    """Customer ids whose identity this caller proved."""
    greeted: bool = False
    ended: bool = False
    turns: int = 0
    job: str | None = None
    """The task being served: order_status, return, refund_status, cancel, change_address or availability."""
    pending: Pending = "none"
    order_number: str | None = None
    order_attempts: int = 0
    identity_attempts: int = 0
    product_id: str | None = None
    color: str | None = None
    size: str | None = None
    sku: str | None = None
    """The order item a return is about."""
    item_hint: str | None = None
    """The product the caller named when asking for an order task ("return the chinos from order ...")."""
    candidates: list[str] = msgspec.field(default_factory=list)
    """Product ids or SKUs the last question offered to choose from."""
    digits: str = ""
    """DTMF keyed so far (entry ends with '#')."""
    misunderstood: int = 0
    silences: int = 0
    last_sentences: list[str] = msgspec.field(default_factory=list)
    last_prompt: list[str] = msgspec.field(default_factory=list)
    """The question of the last reply, re-asked after silence or a misunderstanding."""
    last_expect: Expect = "free"
    new_address: str | None = None
    """The shipping address the caller gave, read back and waiting for their yes."""
    address_attempts: int = 0
    """Addresses given for the order under discussion that were unusable or not confirmed."""
    message: str | None = None
    """A message for the team, waiting for a number to call back."""
    messages_left: int = 0
    """Messages this call left (part of their idempotency keys)."""


class Reply(msgspec.Struct, kw_only=True):
    """What to say (one short spoken sentence per entry) and what to do after."""

    sentences: list[str]
    intent: str
    """What the turn was about (an intent, or greeting/silence/misunderstood/dtmf)."""
    expect: Expect = "free"
    """What the caller is expected to say next."""
    end_call: bool = False
    """Hang up once the sentences have played."""
    transfer_to: str | None = None
    """Transfer the call to this number once the sentences have played."""

    @property
    def text(self) -> str:
        """The sentences as one string."""
        return " ".join(self.sentences)
