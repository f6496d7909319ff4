"""What LLM mode remembers of a call between turns: the chat history (bounded) and the guard counters.

Invariants:
- Plain msgspec data, stored in the brain's state hash beside the dialog state, so a replica taking the call
  over continues the same conversation. A state saved before LLM mode existed decodes to an empty memory.
- The history is trimmed by whole turns only (a ``tool`` message never loses the assistant message that asked
  for it), to at most :data:`MAX_TURNS` turns and about :data:`MAX_CHARS` characters.
- Identity is not remembered here: it lives in ``DialogState.verified``, which the rules dialog and the tools
  both read, so trimming the history never un-verifies or re-verifies anyone.
"""

from __future__ import annotations

from typing import Any, Final, Literal

import msgspec

__all__ = ["MAX_CHARS", "MAX_TURNS", "LlmMemory", "Message", "PendingAction", "WireToolCall"]

MAX_TURNS: Final = 10
MAX_CHARS: Final = 12_000


class WireToolCall(msgspec.Struct, frozen=True, kw_only=True):
    """A tool call as it is sent back to the server in the assistant message."""

    id: str
    name: str
    arguments: str

    def wire(self) -> dict[str, Any]:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


class Message(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One chat message."""

    role: Literal["user", "assistant", "tool"]
    content: str | None = None
    tool_calls: list[WireToolCall] = msgspec.field(default_factory=list)
    tool_call_id: str | None = None

    def wire(self) -> dict[str, Any]:
        """The message in the chat completions wire format."""
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            out["tool_calls"] = [call.wire() for call in self.tool_calls]
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        return out

    @property
    def size(self) -> int:
        return len(self.content or "") + sum(len(c.arguments) + len(c.name) for c in self.tool_calls)


class PendingAction(msgspec.Struct, frozen=True, kw_only=True):
    """An action a tool was asked for and that waits for the caller's yes in a later turn."""

    kind: Literal["cancel", "return", "address"]
    order: str
    sku: str = ""
    address: str = ""
    """The new shipping address of an ``address`` change, as it will be stored."""
    turn: int
    """The LLM turn (``LlmMemory.turns``) in which it was proposed."""


class LlmMemory(msgspec.Struct, kw_only=True, omit_defaults=True):
    """LLM mode's memory of one call (see the module invariants)."""

    turns: list[list[Message]] = msgspec.field(default_factory=list)
    """Past turns, oldest first; each starts with what the caller said (or with the agent's own prompt)."""
    turn_count: int = 0
    """LLM turns answered so far (numbers :class:`PendingAction`)."""
    failed_verifications: int = 0
    """Identity checks that did not match, over the whole call."""
    pending: PendingAction | None = None

    def messages(self) -> list[dict[str, Any]]:
        """The history in the wire format, oldest first."""
        return [m.wire() for turn in self.turns for m in turn]

    def caller_lines(self) -> list[str]:
        """What the caller said in the remembered turns, oldest first."""
        return [m.content for turn in self.turns for m in turn if m.role == "user" and m.content]

    def add_turn(self, messages: list[Message]) -> None:
        """Remember one turn and trim the oldest turns past the bounds."""
        if not messages:
            return
        self.turns.append(messages)
        while len(self.turns) > MAX_TURNS:
            self.turns.pop(0)
        while len(self.turns) > 1 and sum(m.size for turn in self.turns for m in turn) > MAX_CHARS:
            self.turns.pop(0)

    def note_agent(self, text: str) -> None:
        """Remember something the agent said outside LLM mode (greeting, re-prompt, DTMF answer)."""
        if text:
            self.add_turn([Message(role="assistant", content=text)])
