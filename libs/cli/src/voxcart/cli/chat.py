"""``voxcart chat``: the same dialog as a phone call, by text, through the bus.

A chat is a call without audio. It is opened on the bus exactly as the gateway opens a call, so a brain replica
claims it through the same lease path (and another replica takes it over if that one dies); the caller's lines go
in where stt's transcripts would, and the agent's sentences are read where tts would read them.

Invariants:
- Opening: the call's numbers go in its meta hash first, then ``call.started`` is published once, the call is
  indexed and kept in ``vc:calls:active`` by a heartbeat every second (a worker's sweep releases, and after ten
  seconds reaps, a call that is not there). The CallSid is ``CA`` + 32 hex digits, as Twilio's.
- A spoken line is one ``transcript.final`` (confidence 1.0, utterance ids ``<sid>:chat-<n>`` with ``n``
  increasing); keyed digits are one ``dtmf`` event per key, on the call's events stream.
- The agent's turn is the ``say`` sentences of one turn number (the first above the last turn read) up to the one
  marked ``last``. Brain commits a turn's sentences, its turn record (intent) and any hangup/transfer in one Lua
  call, so once the last sentence is read the rest of the turn is read in the same pass.
- Chat never echoes ``mark``s, so the brain's silence re-prompt (armed when the caller has heard a turn) never
  fires; every agent turn answers a caller line.
- Closing: the call ends as the gateway ends one: out of the active set, ``call.ended`` published, meta
  ``completed`` with the outcome, and every per-call key cut to the ended-call TTL.

Line syntax (scripts and the prompt alike): a blank line or a ``#`` comment is skipped; ``#`` followed directly by
keys (``#10023``, ``#10023#``) keys those digits, as in ``voxcart call``; ``dtmf:1 0 0 2 3#`` keys digits too
(spaces ignored); anything else is said. Keys are ``0-9``, ``*`` and ``#``; ``#`` ends an entry, so it may
only come last. Digits without a final ``#`` are taken as complete after the brain's two-second pause.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sys
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

import msgspec

from voxcart.common import events as ev
from voxcart.common.bus import Bus, BusError, Output, RedisBus, keys, open_bus
from voxcart.common.localredis import LocalRedis
from voxcart.common.settings import Settings
from voxcart.common.tasks import cancel_and_wait
from voxcart.common.worker import Worker
from voxcart.gateway.twilio.pacer import mark_name

if TYPE_CHECKING:
    from voxcart.brain.app import BrainWorker

__all__ = [
    "BrainChoice",
    "CallerLine",
    "ChatError",
    "ChatSession",
    "ChatTimeout",
    "ChatTurn",
    "LocalBrain",
    "brain_serving",
    "parse_line",
    "read_script",
    "run_chat",
]

BrainChoice = Literal["auto", "local", "running"]
"""``auto``: the brain replicas serving Redis if one beat in the last :data:`SERVING_WITHIN_MS`, else one in this
process; ``local``: always one in this process; ``running``: only the replicas already serving."""

SERVING_WITHIN_MS = 3000
"""A brain replica whose heartbeat (every second) is this recent is serving."""
DTMF_KEYS = frozenset("0123456789*#")
CHAT_TO = "chat"
"""The meta ``to`` number of a chat, so its call record says it was not a phone call."""


class ChatError(RuntimeError):
    """The chat cannot go on; the message says why."""


class ChatTimeout(ChatError):
    """No agent turn arrived in time."""


@dataclass(frozen=True)
class CallerLine:
    """One thing the caller does: say ``text`` or key ``keys`` (DTMF). ``raw`` is the line as written."""

    raw: str
    text: str = ""
    keys: str = ""


@dataclass(frozen=True)
class ChatTurn:
    """One agent turn and the caller line it answers (``None`` for the greeting)."""

    turn: int
    caller: str | None
    agent: list[str]
    intent: str
    end_call: bool = False
    transfer_to: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "turn": self.turn,
            "caller": self.caller,
            "agent": self.agent,
            "intent": self.intent,
            "end_call": self.end_call,
            "transfer_to": self.transfer_to,
        }


def parse_line(line: str, where: str = "input") -> CallerLine | None:
    """A caller line -> what to send (``None`` for a blank line or a comment); see the module docstring.

    Raises:
        ChatError: a ``dtmf:`` line with no keys, a key that is not ``0-9*#``, or ``#`` before the last key;
            the message names ``where`` (e.g. ``script.txt:3``).
    """
    stripped = line.strip()
    if not stripped:
        return None
    if stripped.lower().startswith("dtmf:"):
        digits = "".join(stripped[5:].split())
    elif stripped.startswith("#") and len(stripped) > 1 and all(c in DTMF_KEYS for c in stripped[1:]):
        digits = stripped[1:]
    elif stripped.startswith("#"):
        return None
    else:
        return CallerLine(raw=stripped, text=stripped)
    bad = sorted({c for c in digits if c not in DTMF_KEYS})
    if not digits or bad:
        raise ChatError(f"{where}: {stripped!r}: keys must be 0-9, * or # (got {''.join(bad) or 'none'})")
    if "#" in digits[:-1]:
        raise ChatError(f"{where}: {stripped!r}: '#' ends an entry, so it may only be the last key")
    return CallerLine(raw=stripped, keys=digits)


def read_script(path: str) -> list[CallerLine]:
    """The caller lines of a script file, one per line (blank lines and ``#`` comments skipped).

    Raises:
        ChatError: the file cannot be read, or a line is malformed (the message names file and line).
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ChatError(f"script file {path!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ChatError(f"cannot read script file {path!r}: {exc}") from None
    lines = [parse_line(raw, f"{path}:{n}") for n, raw in enumerate(text.splitlines(), start=1)]
    return [line for line in lines if line is not None]


async def brain_serving(bus: Bus) -> bool:
    """Has a brain replica beaten within :data:`SERVING_WITHIN_MS`?"""
    recent = await bus.zrange_by_score(keys.workers("brain"), ev.now_ms() - SERVING_WITHIN_MS, float("inf"))
    return bool(recent)


def _new_sid() -> str:
    return "CA" + uuid.uuid4().hex


@dataclass
class ChatSession:
    """One chat call on the bus.

    Args:
        bus: the bus the brain replicas serve.
        from_number: the caller's number (E.164), or ``""`` for a withheld number.
        reply_timeout: seconds to wait for each agent turn.
        sid: the CallSid (default: a new one).
    """

    bus: Bus
    from_number: str = ""
    reply_timeout: float = 15.0
    sid: str = field(default_factory=_new_sid)
    turn: int = 0
    """The last agent turn read."""
    outcome: str | None = None
    """``agent ended`` or ``transferred`` once the agent ended the call."""
    transfer_to: str | None = None
    _utterances: int = 0
    _heard: tuple[int, int] | None = None
    """The last turn printed and its last sentence, not yet reported heard."""
    _positions: dict[str, str] = field(default_factory=dict)
    _says: dict[int, dict[int, ev.Say]] = field(default_factory=dict)
    _intents: dict[int, str] = field(default_factory=dict)
    _control: dict[int, ev.Hangup | ev.Transfer] = field(default_factory=dict)
    _heartbeat: asyncio.Task[None] | None = None
    _closed: bool = False

    @property
    def ended(self) -> bool:
        """The agent hung up or transferred the call."""
        return self.outcome is not None

    async def open(self) -> ChatTurn:
        """Announce the call as the gateway does and return the agent's greeting.

        Raises:
            ChatTimeout: no greeting within ``reply_timeout``.
            BusError: Redis failed.
        """
        sid = self.sid
        self._positions = {keys.tts(sid): "0-0", keys.control(sid): "0-0", keys.turns(sid): "0-0"}
        await self.bus.hset(keys.meta(sid), {"from": self.from_number, "to": CHAT_TO}, ttl_ms=keys.CALL_TTL_MS)
        started = ev.CallStarted(call_sid=sid, from_number=self.from_number, to_number=CHAT_TO)
        await self.bus.start_call_once(keys.started(sid), keys.LIFECYCLE, ev.encode(started), keys.CALL_TTL_MS)
        now = ev.now_ms()
        await self.bus.hset(keys.meta(sid), {"started": now, "status": "in-progress", "gen": 1})
        await self.bus.zadd(keys.CALLS_INDEX, {sid: now})
        await self.bus.zadd(keys.ACTIVE_CALLS, {sid: now})
        self._heartbeat = asyncio.create_task(self._beat(), name="chat-heartbeat")
        return await self._next_turn(None, "the greeting")

    async def send(self, line: CallerLine) -> ChatTurn:
        """Say or key one caller line and return the agent's answer.

        Raises:
            ChatError: the call has already ended.
            ChatTimeout: no answer within ``reply_timeout`` (the message names the turn).
            BusError: Redis failed.
        """
        if self.ended or self._closed:
            raise ChatError(f"the call has ended ({self.outcome or 'closed'}); {line.raw!r} was not sent")
        sid = self.sid
        now = ev.now_ms()
        events: list[ev.Event] = []
        if line.keys:
            events = [ev.Dtmf(call_sid=sid, digit=d, arrived=now) for d in line.keys]
        else:
            self._utterances += 1
            events = [
                ev.TranscriptFinal(
                    call_sid=sid,
                    utterance_id=f"{sid}:chat-{self._utterances}",
                    text=line.text,
                    confidence=1.0,
                    first_voiced_arrived=now,
                    last_voiced_arrived=now,
                    endpointed_at=now,
                    recognized_at=now,
                )
            ]
        if self._heard is not None:
            # the caller read the whole reply before answering: say so as the gateway does when Twilio echoes the
            # last mark (brain then knows this line answers it, and does not take it for an interruption)
            turn, seq = self._heard
            self._heard = None
            heard = ev.Mark(call_sid=sid, name=mark_name(turn, seq), turn_no=turn, seq=seq, played=True)
            events.insert(0, heard)
        outputs = [Output(keys.events(sid), ev.encode(e), maxlen=keys.EVENTS_MAXLEN) for e in events]
        await self.bus.publish(outputs, ttl_ms=keys.CALL_TTL_MS)
        return await self._next_turn(line.raw, f"turn {self.turn + 1} (the answer to {line.raw!r})")

    async def close(self) -> None:
        """End the call as the gateway does (idempotent); the outcome is ``caller hung up`` unless the agent
        ended it."""
        if self._closed:
            return
        self._closed = True
        if self._heartbeat is not None:
            await cancel_and_wait(self._heartbeat)
        sid = self.sid
        outcome = self.outcome or "caller hung up"
        ended = ev.CallEnded(call_sid=sid, reason=outcome)
        meta: dict[str, str | float] = {"status": "completed", "ended": ev.now_ms(), "outcome": outcome}
        if self.transfer_to:
            meta["transfer_to"] = self.transfer_to
        await self.bus.zrem(keys.ACTIVE_CALLS, [sid])
        await self.bus.publish([Output(keys.LIFECYCLE, ev.encode(ended), maxlen=keys.LIFECYCLE_MAXLEN)])
        await self.bus.hset(keys.meta(sid), meta)
        await self.bus.expire(keys.per_call_keys(sid), keys.ENDED_CALL_TTL_MS)

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            with contextlib.suppress(BusError):
                await self.bus.zadd(keys.ACTIVE_CALLS, {self.sid: ev.now_ms()})

    async def _next_turn(self, caller: str | None, what: str) -> ChatTurn:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.reply_timeout
        while (turn := self._complete_turn()) is None:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise ChatTimeout(f"no reply to {what} within {self.reply_timeout:g} s")
            await self._pump(max(1, min(200, int(remaining * 1000))))
        await self._pump(0)  # the rest of the turn's commit (its record, a hangup or transfer)
        says = self._says.pop(turn)
        control = self._control.pop(turn, None)
        self.turn = turn
        self._heard = (turn, max(says))
        result = ChatTurn(
            turn=turn,
            caller=caller,
            agent=[says[seq].text for seq in sorted(says)],
            intent=self._intents.pop(turn, ""),
            end_call=isinstance(control, ev.Hangup),
            transfer_to=control.number if isinstance(control, ev.Transfer) else None,
        )
        if result.transfer_to:
            self.outcome, self.transfer_to = "transferred", result.transfer_to
        elif result.end_call:
            self.outcome = "agent ended"
        return result

    def _complete_turn(self) -> int | None:
        """The first turn after the last one read whose last sentence has arrived."""
        for turn in sorted(t for t in self._says if t > self.turn):
            says = self._says[turn]
            last = [s.seq for s in says.values() if s.last]
            if last and all(seq in says for seq in range(last[0] + 1)):
                return turn
        return None

    async def _pump(self, block_ms: int) -> None:
        """Read what is new on the call's tts, control and turns streams (``block_ms`` 0: without waiting)."""
        for entry in await self.bus.read(self._positions, count=500, block_ms=block_ms):
            self._positions[entry.stream] = entry.id
            try:
                event = ev.decode(entry.data)
            except ev.EventDecodeError:
                continue
            if isinstance(event, ev.Say) and event.turn_no > self.turn:
                self._says.setdefault(event.turn_no, {})[event.seq] = event
            elif isinstance(event, ev.TurnRecord) and event.speaker == "agent":
                self._intents[event.turn_no] = event.intent
            elif isinstance(event, ev.Hangup | ev.Transfer):
                self._control[event.after_turn] = event


@dataclass
class LocalBrain:
    """A brain worker replica running in this process (what ``voxcart serve brain`` runs, minus the language
    publication stt needs: a chat has no audio)."""

    settings: Settings
    bus: Bus
    worker: Worker | None = None
    _brain: BrainWorker | None = None
    _task: asyncio.Task[None] | None = None

    @property
    def replica(self) -> str:
        return self.worker.settings.replica_id if self.worker is not None else ""

    async def start(self) -> None:
        """Build the dialog (``STORE_SEED``/``STORE_TODAY``) and start serving; exits on a bad store setting."""
        from voxcart.brain.app import build_worker

        replica = f"chat-brain-{socket.gethostname()}-{os.getpid()}"
        settings = msgspec.structs.replace(self.settings, replica_id=replica, host="127.0.0.1", metrics_port=0)
        self._brain = await asyncio.to_thread(build_worker, settings, self.bus)
        self.worker = self._brain.worker
        self._task = asyncio.create_task(self.worker.run(install_signals=False), name="chat-brain")
        try:
            async with asyncio.timeout(10):
                # its first heartbeat comes once it has joined the lifecycle group
                while await self.bus.zscores(keys.workers("brain"), [replica]) == [None]:
                    if self._task.done():
                        await self._task  # raises what stopped it
                        raise ChatError("the brain in this process stopped while starting")
                    await asyncio.sleep(0.02)
        except TimeoutError:
            raise ChatError("the brain in this process did not start within 10 s") from None

    async def stop(self, grace_s: float = 10.0) -> None:
        """Drain (release the call) and stop; cancelled if that takes longer than ``grace_s``."""
        if self.worker is None or self._task is None:
            return
        self.worker.request_stop()
        try:
            async with asyncio.timeout(grace_s):
                await asyncio.shield(self._task)
        except TimeoutError:
            await cancel_and_wait(self._task)
        finally:
            if self._brain is not None:
                await self._brain.aclose()


@dataclass
class _Printer:
    """Writes turns as text (``agent: ...``) or as one JSON object per turn."""

    out: IO[str]
    as_json: bool
    echo_caller: bool

    def turn(self, turn: ChatTurn) -> None:
        if self.as_json:
            self.out.write(json.dumps(turn.as_json()) + "\n")
        else:
            if turn.caller is not None and self.echo_caller:
                self.out.write(f"caller: {turn.caller}\n")
            for sentence in turn.agent:
                self.out.write(f"agent:  {sentence}\n")
            if turn.transfer_to:
                self.out.write(f"(the agent transferred the call to {turn.transfer_to})\n")
            elif turn.end_call:
                self.out.write("(the agent hung up)\n")
        self.out.flush()


def _typed_lines(source: IO[str]) -> asyncio.Queue[str | None]:
    """Lines typed at the terminal, read on a daemon thread (so an unanswered prompt never holds up the exit);
    ``None`` at end of input (Ctrl-D)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str | None] = asyncio.Queue()

    def read() -> None:
        for raw in iter(source.readline, ""):
            loop.call_soon_threadsafe(queue.put_nowait, raw)
        loop.call_soon_threadsafe(queue.put_nowait, None)

    threading.Thread(target=read, name="chat-stdin", daemon=True).start()
    return queue


async def _connect(redis_url: str, cluster: bool) -> RedisBus:
    bus = open_bus(redis_url, cluster=cluster)
    if not await bus.ping():
        await bus.close()
        raise ChatError(f"cannot reach Redis at {redis_url} (set REDIS_URL to a Redis that answers)")
    return bus


async def _converse(session: ChatSession, lines: Sequence[CallerLine] | None, printer: _Printer, err: IO[str]) -> None:
    """Greeting, then each caller line (from ``lines``, or typed at the prompt when ``None``) until the agent
    ends the call or the input ends."""
    printer.turn(await session.open())
    if lines is not None:
        for line in lines:
            if session.ended:
                break
            printer.turn(await session.send(line))
        return
    typed_lines = _typed_lines(sys.stdin)
    while not session.ended:
        err.write("caller> ")
        err.flush()
        raw = await typed_lines.get()
        if raw is None:
            err.write("\n")
            return
        try:
            typed = parse_line(raw, "input")
        except ChatError as exc:
            err.write(f"{exc}\n")
            continue
        if typed is not None:
            printer.turn(await session.send(typed))


async def run_chat(
    settings: Settings,
    from_number: str = "",
    script: str | None = None,
    as_json: bool = False,
    timeout: float = 15.0,
    brain: BrainChoice = "auto",
    out: IO[str] | None = None,
    err: IO[str] | None = None,
) -> int:
    """``voxcart chat``: run one chat call and print it; returns the exit code.

    Caller lines come from ``script``, else from standard input: typed at a prompt when it is a terminal, read to
    its end first otherwise. Exit codes: 0 the chat ran to its end; 1 it could not (Redis, brain, a reply timed
    out); 2 the input was bad (missing script, malformed line).
    """
    out = out or sys.stdout
    err = err or sys.stderr
    from .stack import StackError, resolve_redis

    interactive = script is None and sys.stdin.isatty()
    try:
        if script is not None:
            lines: list[CallerLine] | None = read_script(script)
        elif interactive:
            lines = None
        else:
            raw = sys.stdin.read().splitlines()
            parsed = [parse_line(line, f"stdin:{n}") for n, line in enumerate(raw, start=1)]
            lines = [line for line in parsed if line is not None]
    except ChatError as exc:
        err.write(f"voxcart chat: {exc}\n")
        return 2
    server: LocalRedis | None = None
    bus: RedisBus | None = None
    local: LocalBrain | None = None
    session: ChatSession | None = None
    try:
        redis_url, server = await asyncio.to_thread(resolve_redis, settings.redis_url)
        bus = await _connect(redis_url, settings.redis_cluster)
        serving = brain != "local" and await brain_serving(bus)
        if brain == "running" and not serving:
            raise ChatError(f"no brain replica is serving {redis_url} (start one: voxcart up, or voxcart serve brain)")
        if not serving:
            local = LocalBrain(settings, bus)
            await local.start()
        where = f"brain in this process ({local.replica})" if local else "the brain replicas serving it"
        session = ChatSession(bus, from_number, reply_timeout=timeout)
        err.write(f"chat {session.sid} from {from_number or 'a withheld number'}: redis {redis_url}, {where}\n")
        printer = _Printer(out, as_json, echo_caller=not interactive)
        await _converse(session, lines, printer, err)
        if not session.ended and not as_json:
            out.write("(the caller hung up)\n")
        return 0
    except (ChatError, StackError) as exc:
        err.write(f"voxcart chat: {exc}\n")
        return 1
    except BusError as exc:
        err.write(f"voxcart chat: lost Redis: {exc}\n")
        return 1
    finally:
        # the brain first: stopping a worker while its sweep is dropping a call that just ended can hang it
        if local is not None:
            await local.stop()
        if session is not None and bus is not None:
            with contextlib.suppress(BusError):
                await session.close()
        if bus is not None:
            await bus.close()
        if server is not None:
            server.stop()
