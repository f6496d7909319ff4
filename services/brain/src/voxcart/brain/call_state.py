"""What brain keeps about a call between entries: the structs stored (msgpack) in the call's state hash under
``brain``, and their codec.

They live apart from the worker because they are a wire format between replicas, not logic: a replica that takes
a call over decodes the state its previous owner wrote, possibly with older code.

Invariants:
- The field names and types are the wire format (msgpack maps keyed by field name): a field may be added with
  a default, never renamed or retyped, so replicas running older and newer code can take a call over from
  each other mid-dialog.
- The state is committed together with the outputs and the checkpoint it goes with (see ``worker``), so it never
  runs ahead of or behind what was said.
"""

from __future__ import annotations

import msgspec

from .dialog import DialogState
from .llm import LlmMemory
from .turntaking import Barge

__all__ = ["BrainState", "LastFinal", "Speaking", "decode_state", "dialog_copy", "encode_state"]


class Speaking(msgspec.Struct, kw_only=True):
    """An LLM-mode reply being committed sentence by sentence."""

    utterance_id: str
    """The final it answers (its caller record and barge-in are already committed)."""
    turn_no: int = 0
    """The turn its sentences go out in; 0 until the first sentence."""
    said: list[str] = msgspec.field(default_factory=list)
    """Sentences already committed, in order (``seq`` = index)."""


class LastFinal(msgspec.Struct, kw_only=True):
    """The caller's last answered final, kept to merge a continuation into it (see ``BrainHandler._merged``)."""

    text: str
    confidence: float
    last_voiced: float
    turn_no: int
    """The turn that answered it (0: nothing was said)."""
    dialog: DialogState
    """The dialog as it was before that answer."""


class BrainState(msgspec.Struct, kw_only=True):
    """Everything brain keeps about a call (stored in the call's state hash)."""

    dialog: DialogState
    turn_no: int = 0
    """The last turn number allocated."""
    last_seq: int = -1
    """Index of the last sentence of turn ``turn_no``."""
    played_turn: int = 0
    """The last turn whose final sentence the caller heard (mark echoed as played)."""
    answered: list[str] = msgspec.field(default_factory=list)
    """Utterance ids already answered (last few), so a replayed final is not answered twice."""
    finished: bool = False
    llm: LlmMemory = msgspec.field(default_factory=LlmMemory)
    """LLM mode's chat history and guard counters (empty in rules mode)."""
    speaking: Speaking | None = None
    """LLM mode: the reply in progress (committed in parts), None between turns."""
    heard_turn: int = 0
    heard_seq: int = -1
    """The last sentence (of turn ``heard_turn``) whose mark echoed as played."""
    barge: Barge = msgspec.field(default_factory=Barge)
    """Turn-taking state: the utterance that paused or cut the agent, recent noise onsets."""
    last_final: LastFinal | None = None
    asks: bool = False
    """Turn ``turn_no`` ends in a question (a backchannel word during its last sentence answers it)."""


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(BrainState)
_dialog_decoder = msgspec.msgpack.Decoder(DialogState)


def encode_state(state: BrainState) -> bytes:
    """The state as stored under ``brain`` in the call's state hash."""
    return _encoder.encode(state)


def decode_state(raw: bytes) -> BrainState:
    """A state stored by :func:`encode_state` (by this replica or by the call's previous owner)."""
    return _decoder.decode(raw)


def dialog_copy(dialog: DialogState) -> DialogState:
    """A deep copy of a dialog state (kept to go back to it when a final is merged with the next)."""
    return _dialog_decoder.decode(_encoder.encode(dialog))
