"""LLM mode's turn: stream a model's reply sentence by sentence, run its tool calls, fall back to the rules.

Usage::

    agent = LlmAgent(LlmClient(LlmConfig(base_url=..., model=...)), dialog)
    async with contextlib.aclosing(agent.answer(state, memory, "where is my order", 0.9)) as turn:
        async for item in turn:
            if isinstance(item, Sentence): ...  # speak it now
            else: reply, memory = item.reply, item.memory  # the turn is over

Invariants:
- Each sentence is yielded as soon as the stream completes it; nothing is yielded twice in a turn.
- The turn always ends with exactly one :class:`Done`: on a model error, a stall, a malformed stream or too
  many tool rounds, the rules dialog answers the same utterance (within ``turn_s``), after whatever was
  already said; if a tool already did something this turn, its outcome is said instead.
- The memory handed in is not mutated: the turn works on a copy and returns the new memory in :class:`Done`
  (so state saved mid-turn still holds the memory of before the turn, and a replayed turn proposes afresh).
- The guardrails are the tools' (:mod:`._tools`); the prompt only explains them.
- A store failure in a tool ends the model's turn like a model failure: the rules dialog answers, and it is the
  one place that turns a store failure into an apology and an offer of a person
  (:class:`~voxcart.brain.dialog.Dialog`).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import time
from collections.abc import AsyncGenerator
from typing import Any

import msgspec
from prometheus_client import Counter

from voxcart.brain.dialog import Dialog, DialogState, Reply
from voxcart.brain.llm._client import LlmClient, LlmError, StreamEnd, TextDelta
from voxcart.brain.llm._memory import LlmMemory, Message, WireToolCall
from voxcart.brain.llm._sentences import SentenceSplitter
from voxcart.brain.llm._tools import TOOLS, ToolBox
from voxcart.brain.store import StoreError
from voxcart.common.metrics import PROVIDER_FALLBACKS

__all__ = ["Done", "LlmAgent", "Sentence"]

log = logging.getLogger("voxcart.brain.llm")

LLM_TURNS = Counter(
    "voxcart_brain_llm_turns", "LLM-mode turns by outcome: ok, or the kind of failure the rules answered", ["outcome"]
)
PROVIDER_FALLBACKS.labels("brain", "llm")  # a turn the rules dialog answered instead: exported at 0 from the start

_ANYTHING_ELSE = "Is there anything else I can help you with?"


class Sentence(msgspec.Struct, frozen=True):
    """One complete sentence of the reply, to speak now."""

    text: str


class Done(msgspec.Struct, frozen=True, kw_only=True):
    """The turn is over: the whole reply (every sentence yielded), and the call's new LLM memory."""

    reply: Reply
    memory: LlmMemory
    fallback: str | None = None
    """Why the rules dialog answered (the error), or None when the model did."""


class LlmAgent:
    """Answers caller utterances with an OpenAI-compatible model and the store tools.

    Args:
        client: the streaming client.
        dialog: the rules dialog (store, clock, confidence threshold), used for fallbacks.
        max_rounds: model requests per turn at most (tool rounds + the final answer).
        turn_s: the whole turn's budget; past it the rules dialog answers.
    """

    def __init__(self, client: LlmClient, dialog: Dialog, *, max_rounds: int = 4, turn_s: float = 12.0) -> None:
        self.client = client
        self.dialog = dialog
        self.max_rounds = max_rounds
        self.turn_s = turn_s

    async def aclose(self) -> None:
        await self.client.aclose()

    def system_prompt(self, state: DialogState) -> str:
        """The instructions for one call: the shop, today, the caller, and how to speak."""
        store = self.dialog.store
        info = store.info
        today = self.dialog.now().date()
        lines = [
            f"You are the phone agent of {info.name}, a shop. Today is {today:%A, %B %d, %Y}.",
            "You help callers with order status, returns, refunds, cancellations, changing the shipping address of "
            "an order that has not shipped, product availability and the shop's policies, using the tools. Never "
            "invent facts: answer only from tool results.",
            "You are speaking on the phone: reply in one to three short, plain sentences, no lists, no markdown, "
            "no emojis. Read order numbers digit by digit.",
            "Order details need the caller's identity: if a tool says identity_required, ask for the ZIP code or "
            "email on the order and call verify_identity with what the caller says. Actions need the caller's "
            "yes: propose them first as the tools explain.",
            "If the caller wants a person, call transfer_to_human; if it says no one is available, offer to take a "
            "message (their name and message) and call leave_message. When the caller is done, say goodbye and "
            "call end_call.",
        ]
        if state.caller_customer:
            customer = store.get_customer(state.caller_customer)
            if customer is not None:
                lines.append(
                    f"The calling number belongs to {customer.name.split()[0]}; my_orders lists their orders, and "
                    "their own orders need no further identity check."
                )
        return "\n".join(lines)

    async def answer(
        self,
        state: DialogState,
        memory: LlmMemory,
        text: str,
        confidence: float = 1.0,
        *,
        stop: asyncio.Event | None = None,
    ) -> AsyncGenerator[Sentence | Done, None]:
        """Answer one caller utterance (see the module invariants).

        Args:
            state: the call's dialog state (mutated: verification, the order discussed, the rules' memory).
            memory: the call's LLM memory (not mutated; the new one comes in :class:`Done`).
            text: what the caller said.
            confidence: the recognizer's confidence; below the dialog's threshold the rules dialog asks again.
            stop: set it to end the turn after the current sentence (the caller spoke again).
        """
        work = copy.deepcopy(memory)
        if state.ended:
            yield Done(reply=Reply(sentences=[], intent="ended"), memory=work)
            return
        if not text.strip() or confidence < self.dialog.min_confidence:
            reply = self.dialog.on_text(state, text, confidence)
            for sentence in reply.sentences:
                yield Sentence(sentence)
            work.add_turn([Message(role="user", content=text), Message(role="assistant", content=reply.text)])
            yield Done(reply=reply, memory=work)
            return
        work.turn_count += 1
        now = self.dialog.now()
        tools = ToolBox(self.dialog.store, state, work, now.date(), [*work.caller_lines(), text], now)
        user = Message(role="user", content=text)
        said: list[str] = []
        exchange: list[Message] = [user]
        error: str | None = None
        try:
            async with contextlib.aclosing(self._rounds(state, work, tools, exchange, stop)) as rounds:
                async for sentence in rounds:
                    said.append(sentence)
                    yield Sentence(sentence)
            if not said and stop is not None and stop.is_set():  # the caller spoke again before we did
                work.add_turn(exchange)
                yield Done(reply=Reply(sentences=[], intent="interrupted"), memory=work)
                return
            if not said and not (tools.end_call or tools.transfer_to):
                raise LlmError("protocol", "the model's reply had no text")
        except LlmError as exc:
            error = f"{exc.kind}: {exc}"
            LLM_TURNS.labels(exc.kind).inc()
            log.warning("LLM turn failed, the rules dialog answers: %s", error, extra={"call_sid": state.call_id})
        except StoreError as exc:
            error = f"store: {type(exc).__name__}: {exc}"
            LLM_TURNS.labels("store").inc()
            log.warning(
                "the store failed in an LLM turn, the rules dialog answers: %s", exc, extra={"call_sid": state.call_id}
            )
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            LLM_TURNS.labels("exception").inc()
            log.exception("LLM turn failed, the rules dialog answers", extra={"call_sid": state.call_id})
        if error is not None:
            PROVIDER_FALLBACKS.labels("brain", "llm").inc()
            reply = self._fallback(state, tools, text, confidence)
            extra = [s for s in reply.sentences if s not in said]
            for sentence in extra:
                yield Sentence(sentence)
            work.pending = None
            work.add_turn([user, Message(role="assistant", content=" ".join([*said, *extra]))])
            reply = msgspec.structs.replace(reply, sentences=[*said, *extra])
            yield Done(reply=reply, memory=work, fallback=error)
            return
        LLM_TURNS.labels("ok").inc()
        extra = self._closing(tools, said)
        for sentence in extra:
            yield Sentence(sentence)
        said.extend(extra)
        work.add_turn(exchange)
        yield Done(reply=self._record(state, tools, said), memory=work)

    async def _rounds(
        self,
        state: DialogState,
        work: LlmMemory,
        tools: ToolBox,
        exchange: list[Message],
        stop: asyncio.Event | None,
    ) -> AsyncGenerator[str, None]:
        """Request, stream and run tools until the model answers without tool calls."""
        deadline = time.monotonic() + self.turn_s
        history = [{"role": "system", "content": self.system_prompt(state)}, *work.messages()]
        for _ in range(self.max_rounds):
            messages: list[dict[str, Any]] = [*history, *(m.wire() for m in exchange)]
            splitter = SentenceSplitter()
            parts: list[str] = []
            end: StreamEnd | None = None
            async with contextlib.aclosing(self.client.stream(messages, TOOLS, deadline=deadline)) as stream:
                async for item in stream:
                    if stop is not None and stop.is_set():
                        break
                    if isinstance(item, TextDelta):
                        parts.append(item.text)
                        for sentence in splitter.feed(item.text):
                            yield sentence
                    else:
                        end = item
            stopped = stop is not None and stop.is_set()
            if end is None and not stopped:
                raise LlmError("protocol", "the stream ended without a finish")
            for sentence in [] if stopped else splitter.flush():  # a cut-off sentence is never spoken
                yield sentence
            calls = [] if end is None or stopped else end.tool_calls
            content = "".join(parts).strip() or None
            wire_calls = [WireToolCall(id=c.id, name=c.name, arguments=c.arguments or "{}") for c in calls]
            exchange.append(Message(role="assistant", content=content, tool_calls=wire_calls))
            if not calls:
                return
            for call in calls:
                result = tools.run(call.name, call.arguments)
                exchange.append(Message(role="tool", content=result, tool_call_id=call.id))
        raise LlmError("protocol", f"the model was still calling tools after {self.max_rounds} requests")

    def _fallback(self, state: DialogState, tools: ToolBox, text: str, confidence: float) -> Reply:
        if tools.done:  # an action happened this turn: tell the caller, do not re-interpret their words
            return self._record(state, tools, [*tools.done, _ANYTHING_ELSE])
        return self.dialog.on_text(state, text, confidence)

    def _closing(self, tools: ToolBox, said: list[str]) -> list[str]:
        """What to add when the model ended or transferred the call without saying so."""
        if said:
            return []
        if tools.transfer_to:
            return ["Sure, let me transfer you to someone on our team.", "One moment, please."]
        if tools.end_call:
            return [f"Thanks for calling {self.dialog.store.info.name}.", "Goodbye!"]
        return []

    def _record(self, state: DialogState, tools: ToolBox, said: list[str]) -> Reply:
        """Leave the rules dialog's memory describing this reply (for repeat, silence and later fallbacks)."""
        state.turns += 1
        state.silences = 0
        state.misunderstood = 0
        state.pending = "none"
        state.job = None
        state.last_sentences = list(said)
        state.last_prompt = [said[-1]] if said and said[-1].endswith("?") else []
        state.last_expect = "free"
        transfer = tools.transfer_to
        end_call = tools.end_call and transfer is None
        if transfer or end_call:
            state.ended = True
        intents = list(dict.fromkeys(tools.called))
        intent = "llm:" + ",".join(intents) if intents else "llm"
        return Reply(sentences=list(said), intent=intent, end_call=end_call, transfer_to=transfer)
