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
- LLM mode (an :class:`~voxcart.brain.llm.LlmAgent`): a final's barge-in and caller record are committed at
  once, then each sentence as the model completes it (the first alone, later ones one behind so the last can
  be flagged ``last``), each commit carrying the state (``speaking``: the turn and the sentences said) but not
  the checkpoint; the last commit carries the checkpoint. A replica that takes over mid-reply answers the same
  final again in the same turn, skipping sentences already said and numbering on after them. A newer final
  read while a reply streams stops it at the model's next piece of text (the barge-in path then cancels it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import msgspec
from prometheus_client import Histogram

from voxcart.common import events as ev
from voxcart.common.bus import BusError, Entry, Output, keys
from voxcart.common.metrics import LATENCY_BUCKETS
from voxcart.common.tasks import cancel_and_wait
from voxcart.common.worker import CallContext

from .dialog import Dialog, DialogState, Reply
from .llm import Done, LlmAgent, LlmMemory, Sentence
from .turntaking import Barge, Policy, heard_and_cut, on_final, on_onset, on_progress, remember_noise

__all__ = ["BrainHandler", "BrainState", "LastFinal", "Speaking"]

log = logging.getLogger("voxcart.brain.worker")

DECISION_SECONDS = Histogram(
    "voxcart_brain_decision_seconds", "From a final transcript read to its reply committed.", buckets=LATENCY_BUCKETS
)

DTMF_TIMEOUT_S = 2.0
"""Keyed digits without '#' are taken as complete after this pause."""
SILENCE_TIMEOUT_S = 8.0
"""After the agent's turn has played, this much caller silence triggers a re-prompt (unless the handler is given
its own ``silence_s``: ``BRAIN_SILENCE_TIMEOUT_MS``)."""
MERGE_WINDOW_MS = 1500.0
"""Speech that starts within this long after a final, and cuts its reply before any of it was heard, continues
that final: both are answered as one."""


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


def _dialog_copy(dialog: DialogState) -> DialogState:
    return _dialog_decoder.decode(_encoder.encode(dialog))


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
        self._timer: asyncio.Task[None] | None = None
        self._stop: asyncio.Event | None = None
        """Set to stop the LLM reply being streamed (a newer final arrived)."""

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
            handler = cls(ctx, dialog, _decoder.decode(raw["brain"]), agent, policy, silence_s)
            log.info("continuing a call's dialog at turn %d", handler.state.turn_no, extra={"call_sid": ctx.sid})
            if not handler.state.finished and handler.state.played_turn == handler.state.turn_no:
                # the last reply had played and the caller was silent: the timer of the previous owner died with it
                handler._start_timer(handler._silence_timeout(), handler._silence)
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
            self._cancel_timer()
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
                outputs = [*self._resume(event.utterance_id), self._caller_record(event)]
                if cut_by_it:  # it had cut the turn: say the turn again from the sentence cut
                    await self._reply(self._carry_on(), checkpoint, outputs)
                    return
                await self.ctx.commit(outputs, checkpoint, self._state_blob())
                return
            if self.agent is not None:
                await self._answer_llm(self.agent, event, checkpoint)
                return
            started = time.perf_counter()
            self.state.answered = [*self.state.answered[-19:], event.utterance_id]
            outputs = self._barge_in(event.first_voiced_arrived)
            outputs.append(self._caller_record(event))
            text, confidence = self._merged(event)
            before = _dialog_copy(self.state.dialog)
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
            self._cancel_timer()
            reply = self.dialog.on_digits(self.state.dialog, event.digit)
            await self._reply(reply, checkpoint, reply_to_voiced=event.arrived)
            if not reply.sentences and self.state.dialog.digits:
                self._start_timer(DTMF_TIMEOUT_S, self._digits_done)
        elif isinstance(event, ev.SpeechStarted | ev.SpeechProgress | ev.SpeechEnded):
            await self._turn_taking(event, checkpoint)
        elif isinstance(event, ev.Mark):
            if event.played and (event.turn_no, event.seq) > (self.state.heard_turn, self.state.heard_seq):
                self.state.heard_turn, self.state.heard_seq = event.turn_no, event.seq
            if event.played and event.turn_no == self.state.turn_no and event.seq == self.state.last_seq:
                self.state.played_turn = event.turn_no
                self._start_timer(self._silence_timeout(), self._silence)
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
        outputs: list[Output] = []
        cut = self._agent_speaking()
        if cut:
            cancel = ev.Cancel(call_sid=self.ctx.sid, turn_no=st.turn_no)
            clear = ev.Clear(call_sid=self.ctx.sid, turn_no=st.turn_no)
            outputs = [
                Output(keys.tts(self.ctx.sid), ev.encode(cancel), maxlen=keys.TTS_MAXLEN),
                Output(keys.control(self.ctx.sid), ev.encode(clear), maxlen=keys.CONTROL_MAXLEN),
            ]
        again = st.dialog.last_sentences if cut else st.dialog.last_prompt
        reply = Reply(sentences=["Sorry, we got cut off.", *again], intent="reconnected", expect=st.dialog.last_expect)
        await self._reply(reply, checkpoint, outputs)

    def _caller_record(self, event: ev.TranscriptFinal) -> Output:
        caller = ev.TurnRecord(
            call_sid=self.ctx.sid,
            speaker="caller",
            text=event.text,
            turn_no=self.state.turn_no + 1,
            started=event.first_voiced_arrived,
            ended=event.last_voiced_arrived,
            confidence=event.confidence,
        )
        return Output(keys.turns(self.ctx.sid), ev.encode(caller), maxlen=keys.TURNS_MAXLEN)

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
            self._cancel_timer()  # the caller is talking: no silence re-prompt
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
                outputs.append(Output(keys.control(self.ctx.sid), ev.encode(pause), maxlen=keys.CONTROL_MAXLEN))
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
                self._start_timer(self._silence_timeout(), self._silence)  # the onset was noise: still waiting
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
        return [Output(keys.control(self.ctx.sid), ev.encode(resume), maxlen=keys.CONTROL_MAXLEN)]

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
        cancel = ev.Cancel(call_sid=self.ctx.sid, turn_no=turn)
        clear = ev.Clear(call_sid=self.ctx.sid, turn_no=turn, voiced_arrived=voiced_arrived)
        return [
            Output(keys.tts(self.ctx.sid), ev.encode(cancel), maxlen=keys.TTS_MAXLEN),
            Output(keys.control(self.ctx.sid), ev.encode(clear), maxlen=keys.CONTROL_MAXLEN),
        ]

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
                say = ev.Say(
                    call_sid=sid,
                    turn_id=f"{sid}:{turn}",
                    turn_no=turn,
                    seq=seq,
                    text=text,
                    last=seq == len(reply.sentences) - 1,
                    reply_to_voiced=reply_to_voiced,
                    decided_at=decided,
                )
                outputs.append(Output(keys.tts(sid), ev.encode(say), maxlen=keys.TTS_MAXLEN))
            outputs.append(self._listen(turn, reply))
            agent = ev.TurnRecord(
                call_sid=sid, speaker="agent", text=reply.text, turn_no=turn, intent=reply.intent, started=decided
            )
            outputs.append(Output(keys.turns(sid), ev.encode(agent), maxlen=keys.TURNS_MAXLEN))
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
        return [Output(keys.control(sid), ev.encode(event), maxlen=keys.CONTROL_MAXLEN)]

    # -- LLM mode ------------------------------------------------------------------------------------------------
    async def _answer_llm(self, agent: LlmAgent, event: ev.TranscriptFinal, checkpoint: dict[str, str]) -> None:
        """Answer a final with the model, committing sentences as they stream (see the module invariants)."""
        started = time.perf_counter()
        speaking = self.state.speaking
        if speaking is None or speaking.utterance_id != event.utterance_id:
            speaking = self.state.speaking = Speaking(utterance_id=event.utterance_id)
            outputs = [*self._barge_in(event.first_voiced_arrived), self._caller_record(event)]
            if not await self.ctx.commit(outputs, None, self._state_blob()):
                return
        before = list(speaking.said)  # said before a takeover: not said again
        held: str | None = None
        done: Done | None = None
        self._stop = asyncio.Event()
        try:
            answer = agent.answer(self.state.dialog, self.state.llm, event.text, event.confidence, stop=self._stop)
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
        self.state.llm = done.memory
        await self._finish_llm(speaking, held, done.reply, event, checkpoint)

    async def _say_now(
        self, speaking: Speaking, sentence: Sentence, event: ev.TranscriptFinal, *, first: bool = False
    ) -> bool:
        """Commit one sentence of the reply in progress (not the last), with the state but no checkpoint."""
        if first and speaking.turn_no == 0:
            self.state.turn_no += 1
            self.state.last_seq = -1  # no sentence of this turn is its last yet
            speaking.turn_no = self.state.turn_no
        speaking.said.append(sentence.text)
        say = self._say(speaking.turn_no, len(speaking.said) - 1, sentence.text, False, event.last_voiced_arrived)
        return await self.ctx.commit([say], None, self._state_blob())

    def _say(self, turn: int, seq: int, text: str, last: bool, reply_to_voiced: float) -> Output:
        say = ev.Say(
            call_sid=self.ctx.sid,
            turn_id=f"{self.ctx.sid}:{turn}",
            turn_no=turn,
            seq=seq,
            text=text,
            last=last,
            reply_to_voiced=reply_to_voiced,
            decided_at=ev.now_ms(),
        )
        return Output(keys.tts(self.ctx.sid), ev.encode(say), maxlen=keys.TTS_MAXLEN)

    async def _finish_llm(
        self, speaking: Speaking, held: str | None, reply: Reply, event: ev.TranscriptFinal, checkpoint: dict[str, str]
    ) -> None:
        """The last commit of an LLM turn: the last sentence, listen hint, call record, control, checkpoint."""
        sid = self.ctx.sid
        outputs: list[Output] = []
        if speaking.turn_no == 0 and held is not None:
            self.state.turn_no += 1
            speaking.turn_no = self.state.turn_no
        if speaking.turn_no:
            turn = speaking.turn_no
            text = held if held is not None else ""  # an empty last sentence only ends the turn (tts says nothing)
            outputs.append(self._say(turn, len(speaking.said), text, True, event.last_voiced_arrived))
            self.state.last_seq = len(speaking.said)
            said = [*speaking.said, *([held] if held is not None else [])]
            self.state.asks = reply.expect != "free" or (bool(said) and said[-1].rstrip().endswith("?"))
            outputs.append(self._listen(turn, reply))
            agent = ev.TurnRecord(
                call_sid=sid,
                speaker="agent",
                text=" ".join(said),
                turn_no=turn,
                intent=reply.intent,
                started=ev.now_ms(),
            )
            outputs.append(Output(keys.turns(sid), ev.encode(agent), maxlen=keys.TURNS_MAXLEN))
        outputs += self._ending(reply)
        self.state.answered = [*self.state.answered[-19:], event.utterance_id]
        self.state.speaking = None
        await self.ctx.commit(outputs, checkpoint, self._state_blob())

    def _listen(self, turn: int, reply: Reply) -> Output:
        """Tell stt what the caller is expected to say after this turn (and which words to listen for)."""
        keyterms = [] if reply.expect in ("digits", "yes_no") else self.dialog.keyterms()
        listen = ev.Listen(call_sid=self.ctx.sid, turn_no=turn, expect=reply.expect, keyterms=keyterms)
        return Output(keys.listen(self.ctx.sid), ev.encode(listen), maxlen=keys.LISTEN_MAXLEN)

    def _state_blob(self) -> dict[str, bytes]:
        return {"brain": _encoder.encode(self.state)}

    # -- timers --------------------------------------------------------------------------------------------
    def _start_timer(self, delay: float, action: object) -> None:
        self._cancel_timer()

        async def fire() -> None:
            await asyncio.sleep(delay)
            async with self._lock:
                assert callable(action)
                try:
                    await action()
                except BusError as exc:
                    # as for an entry: the commit may or may not have landed; the next owner continues the call
                    # from its checkpoint and state (and arms the silence timer again, see ``create``)
                    log.warning(
                        "Redis failed in a timer (%s): releasing the call", exc, extra={"call_sid": self.ctx.sid}
                    )
                    self.ctx.give_up()

        self._timer = asyncio.create_task(fire())

    def _silence_timeout(self) -> float:
        return SILENCE_TIMEOUT_S if self.silence_s is None else self.silence_s

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer is not asyncio.current_task():
            self._timer.cancel()
        self._timer = None

    async def _digits_done(self) -> None:
        if self.state.dialog.digits and not self.state.finished:
            await self._reply(self.dialog.on_digits(self.state.dialog, "#"), None, reply_to_voiced=ev.now_ms())

    async def _silence(self) -> None:
        if not self.state.finished:
            await self._reply(self.dialog.on_silence(self.state.dialog), None)

    def peek(self, event: ev.Event) -> None:
        """LLM mode: a newer final read while a reply streams stops that reply (the caller spoke again)."""
        speaking = self.state.speaking
        if (
            self._stop is not None
            and isinstance(event, ev.TranscriptFinal)
            and event.text.strip()
            and (speaking is None or event.utterance_id != speaking.utterance_id)
        ):
            self._stop.set()

    async def close(self, reason: str) -> None:
        await cancel_and_wait(self._timer)
