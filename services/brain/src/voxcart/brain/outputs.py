"""The bus outputs brain commits besides its state: ``say`` and ``cancel`` (tts), control events (gateway),
``listen`` (stt) and the call record (turns).

Built here from plain values, one function per output, so the rules replies (``worker``) and the model's
streamed replies (``llm_replies``) write them alike: each to its stream, with that stream's ``maxlen``.
"""

from __future__ import annotations

from voxcart.common import events as ev
from voxcart.common.bus import Output, keys

from .dialog import Dialog, Reply

__all__ = ["agent_record", "caller_record", "control", "listen", "say", "stop_turn"]


def say(sid: str, turn: int, seq: int, text: str, *, last: bool, reply_to_voiced: float, decided_at: float) -> Output:
    """One sentence of turn ``turn`` for tts to render (``last``: the turn's last sentence)."""
    event = ev.Say(
        call_sid=sid,
        turn_id=f"{sid}:{turn}",
        turn_no=turn,
        seq=seq,
        text=text,
        last=last,
        reply_to_voiced=reply_to_voiced,
        decided_at=decided_at,
    )
    return Output(keys.tts(sid), ev.encode(event), maxlen=keys.TTS_MAXLEN)


def control(sid: str, event: ev.Event) -> Output:
    """A control event for the gateway (``clear``, ``pause``, ``resume``, ``hangup``, ``transfer``)."""
    return Output(keys.control(sid), ev.encode(event), maxlen=keys.CONTROL_MAXLEN)


def stop_turn(sid: str, turn: int, voiced_arrived: float = 0.0) -> list[Output]:
    """Stop turns up to ``turn``: ``cancel`` their rendering (tts) and ``clear`` their queued audio (gateway).

    Args:
        sid: the call.
        turn: the turn cut.
        voiced_arrived: the first voiced frame of the caller's interruption (0: not the caller's doing).
    """
    cancel = ev.Cancel(call_sid=sid, turn_no=turn)
    clear = ev.Clear(call_sid=sid, turn_no=turn, voiced_arrived=voiced_arrived)
    return [Output(keys.tts(sid), ev.encode(cancel), maxlen=keys.TTS_MAXLEN), control(sid, clear)]


def listen(sid: str, turn: int, reply: Reply, dialog: Dialog) -> Output:
    """Tell stt what the caller is expected to say after this turn (and which words to listen for)."""
    keyterms = [] if reply.expect in ("digits", "yes_no") else dialog.keyterms()
    event = ev.Listen(call_sid=sid, turn_no=turn, expect=reply.expect, keyterms=keyterms)
    return Output(keys.listen(sid), ev.encode(event), maxlen=keys.LISTEN_MAXLEN)


def caller_record(sid: str, event: ev.TranscriptFinal, turn_no: int) -> Output:
    """The call record of the caller's final (``turn_no``: the agent turn that will answer it)."""
    caller = ev.TurnRecord(
        call_sid=sid,
        speaker="caller",
        text=event.text,
        turn_no=turn_no,
        started=event.first_voiced_arrived,
        ended=event.last_voiced_arrived,
        confidence=event.confidence,
    )
    return Output(keys.turns(sid), ev.encode(caller), maxlen=keys.TURNS_MAXLEN)


def agent_record(sid: str, turn: int, text: str, intent: str, started: float) -> Output:
    """The call record of an agent turn."""
    agent = ev.TurnRecord(call_sid=sid, speaker="agent", text=text, turn_no=turn, intent=intent, started=started)
    return Output(keys.turns(sid), ev.encode(agent), maxlen=keys.TURNS_MAXLEN)
