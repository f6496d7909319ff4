"""The brain worker: call events in, spoken replies (``say``), control (``clear``, ``hangup``, ``transfer``) and
the call record out.

Invariants:
- The dialog state, the outputs and the checkpoint are committed together in one fenced Lua call, so a brain
  replica that takes a call over continues mid-dialog and never says a reply twice.
- A transcript is answered once: utterance ids already answered are remembered in the state.
- Turn numbers are allocated from the state; a reply's ``say`` sentences go out in one commit, first sentence
  first, and tts renders them as they arrive.
- Timers (DTMF entry, silence re-prompt) act under the same lock as entries, so they never interleave.
- Barge-in (rules mode) follows ``turntaking``: sustained speech or a real final cuts the turn (``cancel`` to tts,
  ``clear`` to the gateway) once; a backchannel final, music (low speech probability) or an onset that ends
  without words is not answered, and resumes the agent (``resume``) if its onset paused it (``pause`` at the
  gateway, reversible; only with ``Policy.pause_on_onset``), except during the last sentence of a turn that asks
  something (there "yeah" is the answer). An utterance that cut a turn and then ends without words (or with a
  final that would have been ignored) was no interruption: the turn is said again from the sentence cut (rules
  mode), so the caller never sits in a silence nobody ends. The turn-taking state is committed with the rest,
  so a takeover continues it.
- A final that continues the previous one (the caller paused mid-sentence, the reply to the first half was cut
  before any of it played) is merged: the dialog goes back to before the first half and answers both as one.
- What the caller heard: marks echoed as played move ``heard`` (turn, sentence); when a turn is cut, the
  dialog's memory of it (``last_sentences``, what "repeat" says) keeps the sentences heard plus the cut one.
- LLM mode (an :class:`~voxcart.brain.llm.LlmAgent`): finals are answered by the model, sentence by sentence
  in several commits (see ``llm_replies`` for its invariants); greeting, DTMF and silence stay with the rules.

This module is the handler: it routes each event, and keeps the turn-taking and the rules replies. The state
it commits is in ``call_state``, the outputs are built by ``outputs``, the timed actions run on a ``timer``, and
the model's replies stream in ``llm_replies``.
"""

from __future__ import annotations

import asyncio
import logging
import time

from voxcart.common import events as ev
from voxcart.common.bus import Entry, Output, keys
from voxcart.common.worker import CallContext

from . import outputs as out
from .call_state import BrainState, LastFinal, Speaking, decode_state, dialog_copy, encode_state
from .dialog import Dialog, DialogState, Reply
from .llm import LlmAgent
from .llm_replies import LlmReplies
from .metrics import DECISION_SECONDS
from .timer import Timer
from .turntaking import Policy, heard_and_cut, on_final, on_onset, on_progress, remember_noise

__all__ = ["BrainHandler", "BrainState", "LastFinal", "Speaking"]

log = logging.getLogger("voxcart.brain.worker")

DTMF_TIMEOUT_S = 2.0
"""Keyed digits without '#' are taken as complete after this pause."""
SILENCE_TIMEOUT_S = 8.0
"""After the agent's turn has played, this much caller silence triggers a re-prompt (unless the handler is given
its own ``silence_s``: ``BRAIN_SILENCE_TIMEOUT_MS``)."""
MERGE_WINDOW_MS = 1500.0
"""Speech that starts within this long after a final, and cuts its reply before any of it was heard, continues
that final: both are answered as one."""


class BrainHandler:
    """Runs the dialog of one call."""

    def __init__(
        self,
        ctx: CallContext,
        dialog: Dialog,
        state: BrainState,
        agent: LlmAgent | None = None,
        policy: Policy | None = None,
        silence_s: float | None = None,
    ) -> None:
        self.ctx = ctx
        self.policy = policy or Policy()
        self.silence_s = silence_s
        """Caller silence after a played turn that re-prompts (``None``: :data:`SILENCE_TIMEOUT_S`)."""
        self.dialog = dialog
        self.agent = agent
        self.state = state
        self.events = keys.events(ctx.sid)
        self._lock = asyncio.Lock()
        self._timer = Timer(ctx, self._lock)
        """The DTMF entry pause or the silence re-prompt pending (one at a time)."""
        self._llm = LlmReplies(self, agent) if agent is not None else None
        """LLM mode: streams the model's replies to finals."""

    @classmethod
    async def create(
        cls,
        ctx: CallContext,
        dialog: Dialog,
        agent: LlmAgent | None = None,
        policy: Policy | None = None,
        silence_s: float | None = None,
    ) -> BrainHandler:
        """Load the call's state (a takeover continues it) or greet a new call.

        Args:
            ctx: the call.
            dialog: the rules dialog.
            agent: the LLM agent in LLM mode (finals go to it; greeting, DTMF and silence stay with the rules).
            policy: the turn-taking thresholds (default :class:`Policy`).
            silence_s: caller silence that re-prompts (default :data:`SILENCE_TIMEOUT_S`).
        """
        raw = await ctx.bus.hgetall(keys.state(ctx.sid))
        if "brain" in raw:
            handler = cls(ctx, dialog, decode_state(raw["brain"]), agent, policy, silence_s)
            log.info("continuing a call's dialog at turn %d", handler.state.turn_no, extra={"call_sid": ctx.sid})
            if not handler.state.finished and handler.state.played_turn == handler.state.turn_no:
                # the last reply had played and the caller was silent: the timer of the previous owner died with it
                handler._arm_silence()
            return handler
        meta = await ctx.bus.hgetall(keys.meta(ctx.sid))
        caller = meta.get("from", b"").decode()
        handler = cls(ctx, dialog, BrainState(dialog=DialogState(call_id=ctx.sid)), agent, policy, silence_s)
        reply = dialog.greet(handler.state.dialog, caller)
        await handler._reply(reply, checkpoint=None)
        return handler

    # -- entries -----------------------------------------------------------------------------------------
    async def handle(self, entry: Entry, event: ev.Event) -> None:
        async with self._lock:
            await self._handle(entry, event)

    async def _handle(self, entry: Entry, event: ev.Event) -> None:
        checkpoint = {self.events: entry.id}
        if self.state.finished:
            await self.ctx.commit([], checkpoint)
            return
        if isinstance(event, ev.TranscriptFinal):
            self._timer.cancel()
            if event.utterance_id in self.state.answered or not event.text.strip():
                await self.ctx.commit([], checkpoint)
                return
            voiced_ms = event.last_voiced_arrived - event.first_voiced_arrived + 20.0
            cut_by_it = self._cut_by(event.utterance_id)
            speaking = (self._agent_speaking() or cut_by_it) and not self._answer_expected()
            barge = self.state.barge
            prob = barge.prob if barge.utterance_id == event.utterance_id and barge.prob >= 0 else None
            action = on_final(speaking, event.text, event.confidence, voiced_ms, self.policy, prob=prob)
            if action == "ignore":  # a backchannel, a scrap or music: the agent carries on, nothing is answered
                self.state.answered = [*self.state.answered[-19:], event.utterance_id]
                remember_noise(self.state.barge, event.first_voiced_arrived, self.policy)
                outputs = [
                    *self._resume(event.utterance_id),
                    out.caller_record(self.ctx.sid, event, self.state.turn_no + 1),
                ]
                if cut_by_it:  # it had cut the turn: say the turn again from the sentence cut
                    await self._reply(self._carry_on(), checkpoint, outputs)
                    return
                await self.ctx.commit(outputs, checkpoint, self._state_blob())
                return
            if self._llm is not None:
                await self._llm.answer(event, checkpoint)
                return
            started = time.perf_counter()
            self.state.answered = [*self.state.answered[-19:], event.utterance_id]
            outputs = self._barge_in(event.first_voiced_arrived)
            outputs.append(out.caller_record(self.ctx.sid, event, self.state.turn_no + 1))
            text, confidence = self._merged(event)
            before = dialog_copy(self.state.dialog)
            reply = self.dialog.on_text(self.state.dialog, text, confidence)
            await self._reply(reply, checkpoint, outputs, reply_to_voiced=event.last_voiced_arrived)
            self.state.last_final = LastFinal(
                text=text,
                confidence=confidence,
                last_voiced=event.last_voiced_arrived,
                turn_no=self.state.turn_no if reply.sentences else 0,
                dialog=before,
            )
            DECISION_SECONDS.observe(time.perf_counter() - started)
        elif isinstance(event, ev.Dtmf):
            self._timer.cancel()
            reply = self.dialog.on_digits(self.state.dialog, event.digit)
            await self._reply(reply, checkpoint, reply_to_voiced=event.arrived)
            if not reply.sentences and self.state.dialog.digits:
                self._timer.start(DTMF_TIMEOUT_S, self._digits_done)
        elif isinstance(event, ev.SpeechStarted | ev.SpeechProgress | ev.SpeechEnded):
            await self._turn_taking(event, checkpoint)
        elif isinstance(event, ev.Mark):
            if event.played and (event.turn_no, event.seq) > (self.state.heard_turn, self.state.heard_seq):
                self.state.heard_turn, self.state.heard_seq = event.turn_no, event.seq
            if event.played and event.turn_no == self.state.turn_no and event.seq == self.state.last_seq:
                self.state.played_turn = event.turn_no
                self._arm_silence()
            await self.ctx.commit([], checkpoint, self._state_blob())
        elif isinstance(event, ev.StreamReconnected):
            await self._reconnected(checkpoint)
        else:
            await self.ctx.commit([], checkpoint)

    async def _reconnected(self, checkpoint: dict[str, str]) -> None:
        """A new media socket replaced one that died (a gateway replica died): what the old one was playing is
        lost. Stop that turn (``cancel`` to tts, ``clear`` to the gateway, so its rest never plays late), say the
        line was cut and repeat the cut-off prompt: the whole turn if it had not finished playing, else its
        question."""
        st = self.state
        cut = self._agent_speaking()
        outputs = out.stop_turn(self.ctx.sid, st.turn_no) if cut else []
        again = st.dialog.last_sentences if cut else st.dialog.last_prompt
        reply = Reply(sentences=["Sorry, we got cut off.", *again], intent="reconnected", expect=st.dialog.last_expect)
        await self._reply(reply, checkpoint, outputs)

    # -- turn-taking -----------------------------------------------------------------------------------------
    def _agent_speaking(self) -> bool:
        """The agent's latest turn has not finished playing and was not cut."""
        st = self.state
        return st.turn_no > st.played_turn and st.turn_no > st.barge.interrupted_turn

    def _answer_expected(self) -> bool:
        """The agent's turn ends in a question and its last sentence is playing: a "yeah" now answers it."""
        st = self.state
        if not st.asks:
            return False
        return st.last_seq <= 0 or (st.heard_turn == st.turn_no and st.heard_seq >= st.last_seq - 1)

    async def _turn_taking(
        self, event: ev.SpeechStarted | ev.SpeechProgress | ev.SpeechEnded, checkpoint: dict[str, str]
    ) -> None:
        """The caller's speech before its final: pause, interrupt or resume the agent (see ``turntaking``)."""
        st, barge = self.state, self.state.barge
        outputs: list[Output] = []
        if isinstance(event, ev.SpeechStarted):
            self._timer.cancel()  # the caller is talking: no silence re-prompt
            if self._agent_speaking():
                barge.utterance_id, barge.onset_at, barge.paused_turn, barge.prob = (
                    event.utterance_id,
                    event.first_voiced_arrived,
                    0,
                    -1.0,
                )
            if on_onset(self._agent_speaking(), event.first_voiced_arrived, barge, self.policy) == "pause":
                barge.paused_turn = st.turn_no
                pause = ev.Pause(call_sid=self.ctx.sid, turn_no=st.turn_no, voiced_arrived=event.first_voiced_arrived)
                outputs.append(out.control(self.ctx.sid, pause))
        elif isinstance(event, ev.SpeechProgress):
            if barge.utterance_id == event.utterance_id:
                barge.prob = event.prob
            action = on_progress(self._agent_speaking(), event.voiced_ms, event.prob, event.text, self.policy)
            if action == "interrupt":
                barge.utterance_id = event.utterance_id
                outputs = self._barge_in(event.first_voiced_arrived)
        else:
            if barge.utterance_id == event.utterance_id:
                remember_noise(barge, barge.onset_at, self.policy)
            if self._cut_by(event.utterance_id):  # noise that cut the turn: say it again from the sentence cut
                await self._reply(self._carry_on(), checkpoint)
                return
            outputs = self._resume(event.utterance_id)
            if st.turn_no and st.played_turn == st.turn_no and not st.finished:
                self._arm_silence()  # the onset was noise: still waiting
        await self.ctx.commit(outputs, checkpoint, self._state_blob())

    def _cut_by(self, utterance_id: str) -> bool:
        """Whether ``utterance_id`` cut the agent's latest turn before the caller heard all of it (rules mode)."""
        st, barge = self.state, self.state.barge
        return (
            barge.utterance_id == utterance_id
            and barge.interrupted_turn == st.turn_no > 0
            and bool(barge.unheard)
            and st.speaking is None
            and not st.finished
        )

    def _carry_on(self) -> Reply:
        """The turn cut by what turned out to be no interruption, again from the sentence cut; the dialog's memory
        of it is whole again (the caller is about to hear the rest)."""
        st = self.state
        unheard, st.barge.unheard = st.barge.unheard, []
        heard = st.dialog.last_sentences[: max(0, len(st.dialog.last_sentences) - 1)]  # the cut one is unheard[0]
        st.dialog.last_sentences = [*heard, *unheard]
        log.info("the interruption was not one: carrying on from the sentence cut", extra={"call_sid": self.ctx.sid})
        return Reply(sentences=list(unheard), intent="resumed", expect=st.dialog.last_expect)

    def _merged(self, event: ev.TranscriptFinal) -> tuple[str, float]:
        """A final that only continues the caller's previous one (a mid-sentence pause the endpointer took for the
        end): if the reply to that one was cut before the caller heard any of it and this speech began within
        :data:`MERGE_WINDOW_MS` of it, the dialog goes back to before it and answers both as one sentence."""
        st, last = self.state, self.state.last_final
        if (
            last is None
            or not last.turn_no
            or last.turn_no != st.barge.interrupted_turn
            or st.heard_turn >= last.turn_no
            or event.first_voiced_arrived - last.last_voiced > MERGE_WINDOW_MS
        ):
            return event.text, event.confidence
        st.dialog = last.dialog
        log.info("merging a final with the previous one", extra={"call_sid": self.ctx.sid})
        return f"{last.text} {event.text}", min(last.confidence, event.confidence)

    def _resume(self, utterance_id: str) -> list[Output]:
        """The utterance that paused the agent was no interruption: send the held audio on."""
        barge = self.state.barge
        if barge.utterance_id != utterance_id or not barge.paused_turn:
            return []
        turn, barge.paused_turn = barge.paused_turn, 0
        if turn <= barge.interrupted_turn:
            return []
        resume = ev.Resume(call_sid=self.ctx.sid, turn_no=turn)
        return [out.control(self.ctx.sid, resume)]

    def _barge_in(self, voiced_arrived: float) -> list[Output]:
        """The caller spoke over a turn that has not finished playing: stop it (tts) and clear it (gateway), once;
        the dialog remembers of it only what the caller heard (and the sentence cut)."""
        st = self.state
        if not self._agent_speaking():
            return []
        turn = st.turn_no
        st.barge.interrupted_turn = turn
        st.barge.paused_turn = 0
        heard_seq = st.heard_seq if st.heard_turn == turn else -1
        st.barge.unheard = []
        if st.speaking is None and len(st.dialog.last_sentences) == st.last_seq + 1:
            st.barge.unheard = st.dialog.last_sentences[heard_seq + 1 :]
            st.dialog.last_sentences = heard_and_cut(st.dialog.last_sentences, heard_seq)
        return out.stop_turn(self.ctx.sid, turn, voiced_arrived)

    async def _reply(
        self,
        reply: Reply,
        checkpoint: dict[str, str] | None,
        outputs: list[Output] | None = None,
        reply_to_voiced: float = 0.0,
    ) -> None:
        outputs = outputs or []
        sid = self.ctx.sid
        if self.agent is not None:
            self.state.llm.note_agent(reply.text)  # the model hears what the rules said (greeting, DTMF, silence)
        if reply.sentences:
            self.state.turn_no += 1
            turn = self.state.turn_no
            self.state.asks = reply.expect != "free" or reply.sentences[-1].rstrip().endswith("?")
            self.state.last_seq = len(reply.sentences) - 1
            decided = ev.now_ms()
            for seq, text in enumerate(reply.sentences):
                last = seq == len(reply.sentences) - 1
                outputs.append(
                    out.say(sid, turn, seq, text, last=last, reply_to_voiced=reply_to_voiced, decided_at=decided)
                )
            outputs.append(out.listen(sid, turn, reply, self.dialog))
            outputs.append(out.agent_record(sid, turn, reply.text, reply.intent, decided))
        outputs += self._ending(reply)
        await self.ctx.commit(outputs, checkpoint, self._state_blob())

    def _ending(self, reply: Reply) -> list[Output]:
        """The transfer or hang-up a reply ends the call with (after its last turn has played), if any."""
        sid, after = self.ctx.sid, self.state.turn_no
        event: ev.Event
        if reply.transfer_to:
            event = ev.Transfer(call_sid=sid, after_turn=after, number=reply.transfer_to)
        elif reply.end_call:
            event = ev.Hangup(call_sid=sid, after_turn=after)
        else:
            return []
        self.state.finished = True
        return [out.control(sid, event)]

    def _state_blob(self) -> dict[str, bytes]:
        return {"brain": encode_state(self.state)}

    # -- timers --------------------------------------------------------------------------------------------
    def _arm_silence(self) -> None:
        """Re-prompt if the caller stays silent (``silence_s``, else :data:`SILENCE_TIMEOUT_S` as it is now)."""
        self._timer.start(SILENCE_TIMEOUT_S if self.silence_s is None else self.silence_s, self._silence)

    async def _digits_done(self) -> None:
        """The caller keyed digits and paused: take them as entered (as if '#' followed)."""
        if self.state.dialog.digits and not self.state.finished:
            await self._reply(self.dialog.on_digits(self.state.dialog, "#"), None, reply_to_voiced=ev.now_ms())

    async def _silence(self) -> None:
        """The caller stayed silent after the agent's turn played: re-prompt once, then say goodbye."""
        if not self.state.finished:
            await self._reply(self.dialog.on_silence(self.state.dialog), None)

    def peek(self, event: ev.Event) -> None:
        """LLM mode: a newer final read while a reply streams stops that reply (the caller spoke again)."""
        if self._llm is not None:
            self._llm.peek(event)

    async def close(self, reason: str) -> None:
        await self._timer.close()
