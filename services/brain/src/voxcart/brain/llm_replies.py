"""LLM mode's replies: a caller's final answered by the model (an :class:`~voxcart.brain.llm.LlmAgent`), its
sentences committed as the model completes them.

Kept apart from the worker because it is the one place where a reply spans several commits: the handler keeps
the state, the lock, the turn-taking and the rules dialog's replies (greeting, DTMF, silence stay with the rules
in LLM mode too); this turns one final into the commits below.

Invariants:
- A final's barge-in and caller record are committed at once, then each sentence as the model completes it (the
  first alone, later ones one behind so the last can be flagged ``last``), each commit carrying the state
  (``speaking``: the turn and the sentences said) but not the checkpoint; the last commit carries the
  checkpoint.
- A replica that takes over mid-reply answers the same final again in the same turn, skipping sentences already
  said and numbering on after them.
- A newer final read while a reply streams stops it at the model's next piece of text (the barge-in path then
  cancels it).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING

from voxcart.common import events as ev
from voxcart.common.bus import Output

from . import outputs as out
from .call_state import Speaking
from .dialog import Reply
from .llm import Done, LlmAgent, Sentence
from .metrics import DECISION_SECONDS

if TYPE_CHECKING:
    from .worker import BrainHandler

__all__ = ["LlmReplies"]


class LlmReplies:
    """The model's replies in one call. Part of its :class:`~voxcart.brain.worker.BrainHandler`: it works on the
    handler's state with the handler's barge-in, call ending and state blob, and is called under the handler's
    lock (:meth:`peek` excepted).

    Args:
        handler: the call's handler.
        agent: the model that answers the caller's finals.
    """

    def __init__(self, handler: BrainHandler, agent: LlmAgent) -> None:
        self._handler = handler
        self._agent = agent
        self._stop: asyncio.Event | None = None
        """Set to stop the reply being streamed (a newer final arrived)."""

    def peek(self, event: ev.Event) -> None:
        """A newer final read while a reply streams stops that reply (the caller spoke again)."""
        speaking = self._handler.state.speaking
        if (
            self._stop is not None
            and isinstance(event, ev.TranscriptFinal)
            and event.text.strip()
            and (speaking is None or event.utterance_id != speaking.utterance_id)
        ):
            self._stop.set()

    async def answer(self, event: ev.TranscriptFinal, checkpoint: dict[str, str]) -> None:
        """Answer a final with the model, committing sentences as they stream (see the module invariants)."""
        h = self._handler
        started = time.perf_counter()
        speaking = h.state.speaking
        if speaking is None or speaking.utterance_id != event.utterance_id:
            speaking = h.state.speaking = Speaking(utterance_id=event.utterance_id)
            outputs = [
                *h._barge_in(event.first_voiced_arrived),
                out.caller_record(h.ctx.sid, event, h.state.turn_no + 1),
            ]
            if not await h.ctx.commit(outputs, None, h._state_blob()):
                return
        before = list(speaking.said)  # said before a takeover: not said again
        held: str | None = None
        done: Done | None = None
        self._stop = asyncio.Event()
        try:
            answer = self._agent.answer(h.state.dialog, h.state.llm, event.text, event.confidence, stop=self._stop)
            async with contextlib.aclosing(answer) as turn:
                async for item in turn:
                    if isinstance(item, Done):
                        done = item
                    elif item.text in before:
                        before.remove(item.text)
                    elif not speaking.said:
                        if not await self._say_now(speaking, item, event, first=True):
                            return
                        DECISION_SECONDS.observe(time.perf_counter() - started)
                    elif held is None:
                        held = item.text
                    else:
                        if not await self._say_now(speaking, Sentence(held), event):
                            return
                        held = item.text
        finally:
            self._stop = None
        assert done is not None, "an LLM turn always ends with Done"
        h.state.llm = done.memory
        await self._finish(speaking, held, done.reply, event, checkpoint)

    async def _say_now(
        self, speaking: Speaking, sentence: Sentence, event: ev.TranscriptFinal, *, first: bool = False
    ) -> bool:
        """Commit one sentence of the reply in progress (not the last), with the state but no checkpoint."""
        h = self._handler
        if first and speaking.turn_no == 0:
            h.state.turn_no += 1
            h.state.last_seq = -1  # no sentence of this turn is its last yet
            speaking.turn_no = h.state.turn_no
        speaking.said.append(sentence.text)
        say = _say(h.ctx.sid, speaking.turn_no, len(speaking.said) - 1, sentence.text, event, last=False)
        return await h.ctx.commit([say], None, h._state_blob())

    async def _finish(
        self, speaking: Speaking, held: str | None, reply: Reply, event: ev.TranscriptFinal, checkpoint: dict[str, str]
    ) -> None:
        """The last commit of an LLM turn: the last sentence, listen hint, call record, control, checkpoint."""
        h = self._handler
        sid = h.ctx.sid
        outputs: list[Output] = []
        if speaking.turn_no == 0 and held is not None:
            h.state.turn_no += 1
            speaking.turn_no = h.state.turn_no
        if speaking.turn_no:
            turn = speaking.turn_no
            text = held if held is not None else ""  # an empty last sentence only ends the turn (tts says nothing)
            outputs.append(_say(sid, turn, len(speaking.said), text, event, last=True))
            h.state.last_seq = len(speaking.said)
            said = [*speaking.said, *([held] if held is not None else [])]
            h.state.asks = reply.expect != "free" or (bool(said) and said[-1].rstrip().endswith("?"))
            outputs.append(out.listen(sid, turn, reply, h.dialog))
            outputs.append(out.agent_record(sid, turn, " ".join(said), reply.intent, ev.now_ms()))
        outputs += h._ending(reply)
        h.state.answered = [*h.state.answered[-19:], event.utterance_id]
        h.state.speaking = None
        await h.ctx.commit(outputs, checkpoint, h._state_blob())


def _say(sid: str, turn: int, seq: int, text: str, event: ev.TranscriptFinal, *, last: bool) -> Output:
    """A sentence of a streamed reply to ``event``, decided now (each goes out as the model completes it)."""
    return out.say(sid, turn, seq, text, last=last, reply_to_voiced=event.last_voiced_arrived, decided_at=ev.now_ms())
