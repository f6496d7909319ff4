"""The brain worker: call events in, spoken replies (``say``), control (``clear``, ``hangup``, ``transfer``) and
the call record out.

Invariants:
- The dialog state, the outputs and the checkpoint are committed together in one fenced Lua call, so a brain
  replica that takes a call over continues mid-dialog and never says a reply twice.
- A transcript is answered once: utterance ids already answered are remembered in the state.
- Turn numbers are allocated from the state; a reply's ``say`` sentences go out in one commit, first sentence
  first, and tts renders them as they arrive.
- Timers (DTMF entry, silence re-prompt) act under the same lock as entries, so they never interleave.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import msgspec
from prometheus_client import Histogram

from voxcart.common import events as ev
from voxcart.common.bus import Entry, Output, keys
from voxcart.common.metrics import LATENCY_BUCKETS
from voxcart.common.worker import CallContext

from .dialog import Dialog, DialogState, Reply

__all__ = ["BrainHandler", "BrainState"]

log = logging.getLogger("voxcart.brain.worker")

DECISION_SECONDS = Histogram(
    "voxcart_brain_decision_seconds", "From a final transcript read to its reply committed.", buckets=LATENCY_BUCKETS
)

DTMF_TIMEOUT_S = 2.0
"""Keyed digits without '#' are taken as complete after this pause."""
SILENCE_TIMEOUT_S = 8.0
"""After the agent's turn has played, this much caller silence triggers a re-prompt."""


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


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(BrainState)


class BrainHandler:
    """Runs the dialog of one call."""

    def __init__(self, ctx: CallContext, dialog: Dialog, state: BrainState) -> None:
        self.ctx = ctx
        self.dialog = dialog
        self.state = state
        self.events = keys.events(ctx.sid)
        self._lock = asyncio.Lock()
        self._timer: asyncio.Task[None] | None = None

    @classmethod
    async def create(cls, ctx: CallContext, dialog: Dialog) -> BrainHandler:
        """Load the call's state (a takeover continues it) or greet a new call."""
        raw = await ctx.bus.hgetall(keys.state(ctx.sid))
        if "brain" in raw:
            handler = cls(ctx, dialog, _decoder.decode(raw["brain"]))
            log.info("continuing a call's dialog at turn %d", handler.state.turn_no, extra={"call_sid": ctx.sid})
            return handler
        meta = await ctx.bus.hgetall(keys.meta(ctx.sid))
        caller = meta.get("from", b"").decode()
        handler = cls(ctx, dialog, BrainState(dialog=DialogState(call_id=ctx.sid)))
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
            started = time.perf_counter()
            self.state.answered = [*self.state.answered[-19:], event.utterance_id]
            outputs = self._barge_in(event.first_voiced_arrived)
            caller = ev.TurnRecord(
                call_sid=self.ctx.sid,
                speaker="caller",
                text=event.text,
                turn_no=self.state.turn_no + 1,
                started=event.first_voiced_arrived,
                ended=event.last_voiced_arrived,
                confidence=event.confidence,
            )
            outputs.append(Output(keys.turns(self.ctx.sid), ev.encode(caller), maxlen=keys.TURNS_MAXLEN))
            reply = self.dialog.on_text(self.state.dialog, event.text, event.confidence)
            await self._reply(reply, checkpoint, outputs, reply_to_voiced=event.last_voiced_arrived)
            DECISION_SECONDS.observe(time.perf_counter() - started)
        elif isinstance(event, ev.Dtmf):
            self._cancel_timer()
            reply = self.dialog.on_digits(self.state.dialog, event.digit)
            await self._reply(reply, checkpoint, reply_to_voiced=event.arrived)
            if not reply.sentences and self.state.dialog.digits:
                self._start_timer(DTMF_TIMEOUT_S, self._digits_done)
        elif isinstance(event, ev.SpeechStarted):
            self._cancel_timer()
            await self.ctx.commit([], checkpoint)
        elif isinstance(event, ev.Mark):
            if event.played and event.turn_no == self.state.turn_no and event.seq == self.state.last_seq:
                self.state.played_turn = event.turn_no
                self._start_timer(SILENCE_TIMEOUT_S, self._silence)
            await self.ctx.commit([], checkpoint, self._state_blob())
        elif isinstance(event, ev.StreamReconnected):
            # the new socket starts empty: say the last turn again
            reply = Reply(sentences=["Sorry, we got cut off."], intent="reconnected")
            await self._reply(reply, checkpoint)
        else:
            await self.ctx.commit([], checkpoint)

    def _barge_in(self, voiced_arrived: float) -> list[Output]:
        """The caller spoke over a turn that has not finished playing: stop it (tts) and clear it (gateway)."""
        if self.state.turn_no <= self.state.played_turn:
            return []
        turn = self.state.turn_no
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
        if reply.sentences:
            self.state.turn_no += 1
            turn = self.state.turn_no
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
        if reply.transfer_to:
            transfer = ev.Transfer(call_sid=sid, after_turn=self.state.turn_no, number=reply.transfer_to)
            outputs.append(Output(keys.control(sid), ev.encode(transfer), maxlen=keys.CONTROL_MAXLEN))
            self.state.finished = True
        elif reply.end_call:
            hangup = ev.Hangup(call_sid=sid, after_turn=self.state.turn_no)
            outputs.append(Output(keys.control(sid), ev.encode(hangup), maxlen=keys.CONTROL_MAXLEN))
            self.state.finished = True
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
                await action()

        self._timer = asyncio.create_task(fire())

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
        pass

    async def close(self, reason: str) -> None:
        if self._timer is not None:
            self._timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer
