"""LLM mode (``BRAIN_MODE=llm``): an OpenAI-compatible model answers the caller, with the store as tools.

Invariants: the model only talks and asks for tools; every fact comes from a tool, and every guardrail
(identity before order data, the store's cancel and return rules, the caller's yes before an action) is enforced
inside the tools; any failure of the model makes the rules dialog answer that turn.
"""

from __future__ import annotations

from voxcart.brain.llm._agent import Done, LlmAgent, Sentence
from voxcart.brain.llm._client import LlmClient, LlmConfig, LlmError, StreamEnd, TextDelta, ToolCall
from voxcart.brain.llm._memory import LlmMemory, Message, PendingAction, WireToolCall
from voxcart.brain.llm._sentences import SentenceSplitter
from voxcart.brain.llm._tools import MAX_FAILED_VERIFICATIONS, TOOLS, ToolBox

__all__ = [
    "MAX_FAILED_VERIFICATIONS",
    "TOOLS",
    "Done",
    "LlmAgent",
    "LlmClient",
    "LlmConfig",
    "LlmError",
    "LlmMemory",
    "Message",
    "PendingAction",
    "Sentence",
    "SentenceSplitter",
    "StreamEnd",
    "TextDelta",
    "ToolBox",
    "ToolCall",
    "WireToolCall",
]
