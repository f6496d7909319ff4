"""The gateway's failure cases (design.md, "The bus": failure cases), end to end: two gateway replicas behind one
public URL, real Redis, real stt/brain/tts processes, calls through the real Twilio protocol (the simulator plays
Twilio and the load balancer).

- A replayed voice webhook or status callback (same ``I-Twilio-Idempotency-Token``, or a new token with the same
  fallback key) starts the call once and publishes nothing twice, on either replica.
- Twilio opening a second media socket for a live call: the new generation takes over, the old socket's late
  frames are fenced out and the old socket is closed, no caller audio is lost or reordered, the call goes on.
- A gateway replica SIGKILLed mid-reply: Twilio requests ``<Connect action>`` on a surviving replica, gets a
  fresh ``<Connect><Stream>``, brain repeats the cut-off prompt, the stt/brain/tts owners stay; the third break
  ends the call politely.

Every test checks the caller audio in ``audio.in`` against what the simulator sent (no frame lost before the fault,
none reordered), that no sentence was sent twice (mark names are unique per sentence) and that the call went on.
Provider faults (Deepgram, ElevenLabs, the LLM) are in ``test_e2e_failures_providers.py``; worker faults in
``test_e2e_failures_workers.py``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from urllib.parse import urlencode

import httpx
import pytest

from voxcart.cli.caller_voice import synthesize_caller
from voxcart.cli.calling import DEV_AUTH_TOKEN
from voxcart.cli.simulator import CallResult, Line, Reconnect, SimulatorConfig, simulate_call
from voxcart.cli.stack import Stack
from voxcart.common import events as ev
from voxcart.common.audio import FRAME_BYTES, silence_ulaw
from voxcart.common.bus import RedisBus, keys
from voxcart.common.localredis import free_port
from voxcart.gateway.reconnect import GIVE_UP_SAY
from voxcart.gateway.twilio.signature import compute_signature

pytestmark = pytest.mark.e2e

PUBLIC = "https://voxcart.test"
"""The public URL both replicas are configured with (a load balancer's); the simulator maps it onto them."""
HOURS = "what are your opening hours"
HOODIE = "is the blue hoodie in stock in medium"
CUT = "Sorry, we got cut off."
KILL_LOSS_FRAMES = 25
"""Caller frames a SIGKILLed replica may take with it: in flight, or sent before the caller saw the socket die."""


@dataclass
class Replicas:
    """The stack and its two gateway replicas (``ports[i]``; the live process of each in ``procs``)."""

    stack: Stack
    ports: list[int]
    procs: dict[int, int]
    """port -> index in ``stack.processes["gateway"]`` of the process serving it."""

    def url(self, port: int) -> str:
        return f"http://127.0.0.1:{port}"

    def config(self, from_number: str, **kw: object) -> SimulatorConfig:
        base: dict[str, object] = {
            "gateway_url": self.url(self.ports[0]),
            "gateway_urls": (self.url(self.ports[1]),),
            "public_url": PUBLIC,
            "auth_token": DEV_AUTH_TOKEN,
            "from_number": from_number,
            "max_reconnects": 5,  # the gateway must cap them, not the simulator
        }
        return SimulatorConfig(**{**base, **kw})  # type: ignore[arg-type]

    async def kill(self, port: int) -> None:
        await asyncio.to_thread(self.stack.kill, "gateway", self.procs[port])

    def respawn(self, port: int) -> None:
        self.procs[port] = len(self.stack.processes["gateway"])
        self.stack.spawn("gateway", port=port)
        self.stack.wait_gateway(port)

    async def holder(self) -> int | None:
        """The port of the replica holding the (one) live call's socket: ``/healthz`` counts live sockets."""
        async with httpx.AsyncClient(timeout=2.0) as client:
            for port in self.ports:
                try:
                    if (await client.get(f"{self.url(port)}/healthz")).json()["calls"]:
                        return port
                except httpx.HTTPError:
                    continue
        return None


@pytest.fixture(scope="class")
def replicas(stack_runner: Callable[..., AbstractContextManager[Stack]]) -> Iterator[Replicas]:
    with stack_runner("gwfail", {"stt": 1, "brain": 1, "tts": 1}, {"PUBLIC_URL": PUBLIC}) as stack:
        second = free_port()
        stack.spawn("gateway", port=second)
        stack.wait_gateway(second)
        yield Replicas(stack, [stack.port, second], {stack.port: 0, second: 1})


@pytest.fixture
async def bus(replicas: Replicas) -> AsyncIterator[RedisBus]:
    client = RedisBus(replicas.stack.redis_url)
    yield client
    await client.close()


async def get(bus: RedisBus, key: str) -> bytes | None:
    value = await bus.redis.get(key)
    return value if isinstance(value, bytes) else None


def line(text: str) -> Line:
    return Line(synthesize_caller(text, lead_ms=200, tail_ms=100), text)


async def lifecycle(bus: RedisBus, sid: str) -> list[ev.Event]:
    return [e for entry in await bus.range(keys.LIFECYCLE) if (e := ev.decode(entry.data)).call_sid == sid]


async def audio_in(bus: RedisBus, sid: str) -> dict[int, list[ev.AudioFrame]]:
    """The call's caller frames by generation, in stream order."""
    by_gen: dict[int, list[ev.AudioFrame]] = {}
    for entry in await bus.range(keys.audio_in(sid)):
        frame = ev.decode(entry.data)
        assert isinstance(frame, ev.AudioFrame)
        by_gen.setdefault(frame.gen, []).append(frame)
    return by_gen


async def check_caller_audio(bus: RedisBus, result: CallResult, lost: dict[int, int] | None = None) -> None:
    """Each socket's frames are in ``audio.in`` under its own generation, numbered 1, 2, 3 … with the exact bytes
    the caller sent, in order; only a killed socket may miss a tail (at most ``lost[gen]`` frames), and only a
    superseded one may carry late silence frames after its part of the caller track."""
    by_gen = await audio_in(bus, result.call_sid)
    assert sorted(by_gen) == list(range(1, len(result.streams) + 1)), sorted(by_gen)
    offset = 0
    for gen, stream in enumerate(result.streams, start=1):
        frames = by_gen[gen]
        assert [f.chunk for f in frames] == list(range(1, len(frames) + 1)), f"gen {gen}: a gap or reordering"
        sent = result.caller_track[offset * FRAME_BYTES : (offset + stream.frames) * FRAME_BYTES]
        kept = min(len(frames), stream.frames)
        assert b"".join(f.payload for f in frames[:kept]) == sent[: kept * FRAME_BYTES], f"gen {gen}: bytes differ"
        assert stream.frames - kept <= (lost or {}).get(gen, 0), f"gen {gen}: {stream.frames - kept} frames lost"
        late = frames[stream.frames :]
        assert len(late) <= stream.late_frames and all(f.payload == silence_ulaw(FRAME_BYTES) for f in late)
        offset += stream.frames


def check_no_sentence_twice(result: CallResult) -> None:
    marks = [w.name for w in result.wire if w.kind == "mark"]
    assert marks and len(marks) == len(set(marks)), f"a sentence was sent twice: {marks}"
    assert result.record is not None
    agent = [t["turn_no"] for t in result.record["turns"] if t["speaker"] == "agent"]
    assert len(agent) == len(set(agent)), f"an agent turn was recorded twice: {result.record['turns']}"


def silences(result: CallResult) -> list[float]:
    """For each stream after the first: from the last agent audio received before it to its first voiced audio
    (what the caller heard as a gap: the rest of the cut reply, the action request, the new socket, the re-prompt)."""
    gaps = []
    starts = [t for t in result.turns if t.kind == "greeting"][1:]
    for turn in starts:
        assert turn.caller_end_s is not None and turn.agent_start_s is not None, turn
        before = [w.t for w in result.wire if w.kind == "media" and w.voiced and w.t < turn.caller_end_s]
        gaps.append(round(turn.agent_start_s - max(before), 2))
    return gaps


def agent_texts(result: CallResult) -> list[str]:
    assert result.record is not None, result.errors
    return [t["text"] for t in result.record["turns"] if t["speaker"] == "agent"]


def caller_texts(result: CallResult) -> list[str]:
    assert result.record is not None, result.errors
    return [t["text"] for t in result.record["turns"] if t["speaker"] == "caller"]


async def wait_until(predicate: Callable[[], Awaitable[bool]], within: float, what: str) -> None:
    try:
        async with asyncio.timeout(within):
            while not await predicate():
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"no {what} within {within:g} s") from None


class TestGatewayFailures:
    async def test_replayed_webhooks_start_the_call_once_and_publish_nothing_twice(
        self, replicas: Replicas, bus: RedisBus
    ) -> None:
        sid = "CA" + uuid.uuid4().hex
        voice = {"CallSid": sid, "AccountSid": "AC" + "0" * 32, "From": "+15550007001", "To": "+15550003333",
                 "CallStatus": "ringing", "Direction": "inbound", "ApiVersion": "2010-04-01"}  # fmt: skip
        status = {**voice, "CallStatus": "completed", "CallDuration": "0", "SequenceNumber": "0"}

        async def post(client: httpx.AsyncClient, port: int, path: str, form: dict[str, str], token: str) -> str:
            headers = {
                "Content-Type": "application/x-www-form-urlencoded",
                "X-Twilio-Signature": compute_signature(DEV_AUTH_TOKEN, PUBLIC + path, form),
                "I-Twilio-Idempotency-Token": token,
            }
            r = await client.post(f"{replicas.url(port)}{path}", content=urlencode(form), headers=headers)
            assert r.is_success, (path, r.status_code, r.text)
            return r.text

        a, b = replicas.ports
        first_token = str(uuid.uuid4())
        async with httpx.AsyncClient(timeout=10.0) as client:
            # Twilio's retry keeps its token; a re-sent request may come with a new one (fallback key: same call)
            tries = ((a, first_token), (a, first_token), (b, first_token), (b, "other"))
            answers = [await post(client, port, "/twilio/voice", voice, token) for port, token in tries]
            status_token = str(uuid.uuid4())
            for port, token in ((a, status_token), (b, status_token), (a, "another")):
                await post(client, port, "/twilio/status", status, token)
        assert "<Connect" in answers[0] and answers == [answers[0]] * 4, answers
        started = [e for e in await lifecycle(bus, sid) if isinstance(e, ev.CallStarted)]
        assert len(started) == 1 and started[0].from_number == voice["From"]
        meta = await bus.hgetall(keys.meta(sid))
        assert meta["twilio_status"] == b"completed"
        # the status callbacks published nothing; the call never had a socket: end it for the next tests
        assert [type(e) for e in await lifecycle(bus, sid)] == [ev.CallStarted]
        await bus.zrem(keys.ACTIVE_CALLS, [sid])

    async def test_a_second_media_socket_takes_over_and_the_call_goes_on(
        self, replicas: Replicas, bus: RedisBus
    ) -> None:
        items: list[Reconnect | Line] = [Reconnect(linger_s=4.0), await asyncio.to_thread(line, HOURS)]
        result = await simulate_call(replicas.config("+15550007002"), items)

        old, new = result.streams
        assert (old.gateway, old.ended_by) == (replicas.url(replicas.ports[0]), "reconnect")
        assert (new.gateway, new.ended_by) == (replicas.url(replicas.ports[1]), "caller")
        # the old replica noticed the newer socket at its next heartbeat and closed the old one
        assert old.closed_after_s is not None and old.closed_after_s < 3.0, old
        assert old.late_frames > 0
        await check_caller_audio(bus, result)
        by_gen = await audio_in(bus, result.call_sid)
        fenced = old.frames + old.late_frames - len(by_gen[1])
        assert fenced > 0, "late frames of the old socket were written after the new generation's"
        # brain repeated the prompt the caller may have missed, then answered the next line
        texts = agent_texts(result)
        assert sum(t.startswith(CUT) for t in texts) == 1 and "help" in texts[1].lower(), texts
        assert any("open" in t.lower() for t in texts[2:]), texts
        assert any("hours" in t for t in caller_texts(result)), caller_texts(result)
        check_no_sentence_twice(result)
        ended = [e for e in await lifecycle(bus, result.call_sid) if isinstance(e, ev.CallEnded)]
        assert [e.reason for e in ended] == ["caller hung up"], "the call ended once, when the caller hung up"
        assert [t.kind for t in result.turns] == ["greeting", "greeting", "speech"]
        print(f"superseded socket closed after {old.closed_after_s:.2f} s; {fenced} late frames fenced out")
        assert not any(t.timed_out for t in result.turns) and not result.errors

    async def test_a_killed_replica_reconnects_twice_then_the_call_ends_politely(
        self, replicas: Replicas, bus: RedisBus
    ) -> None:
        a, b = replicas.ports
        items = [await asyncio.to_thread(line, t) for t in (HOURS, HOODIE, "thank you goodbye")]
        call = asyncio.create_task(simulate_call(replicas.config("+15550007003"), items))
        sid = ""
        respawn: asyncio.Future[None] | None = None
        try:

            async def found() -> bool:
                nonlocal sid
                members = [m for m, _ in await bus.zrange_by_score(keys.ACTIVE_CALLS, float("-inf"), float("inf"))]
                sid = members[0] if len(members) == 1 else ""
                return bool(sid)

            async def playing(turn: int) -> bool:
                """Turn ``turn``'s audio has been on its way to the caller for a second."""
                last = await bus.last_id(keys.audio_out(sid))
                if last is None or int(last.split("-")[0]) < turn:
                    return False
                await asyncio.sleep(1.0)
                return True

            async def leases() -> dict[str, bytes | None]:
                return {svc: await get(bus, keys.lease(svc, sid)) for svc in ("stt", "brain", "tts")}

            await wait_until(found, 30, "the call")
            await wait_until(lambda: playing(2), 45, "the reply to line 1")  # turn 1 is the greeting
            owners = await leases()
            assert all(owners.values()), owners
            assert await replicas.holder() == a
            await replicas.kill(a)  # 1st break, mid-reply: Twilio asks the action URL, the balancer sends it to b
            respawn = asyncio.get_running_loop().run_in_executor(None, replicas.respawn, a)
            await wait_until(lambda: playing(3), 30, "the re-prompt after reconnect 1")
            assert await leases() == owners, "stt, brain and tts owners stay: only the socket moved"
            await wait_until(lambda: playing(4), 60, "the reply to line 2")
            assert await replicas.holder() == b
            await respawn
            await replicas.kill(b)  # 2nd break: to a (respawned)
            respawn = asyncio.get_running_loop().run_in_executor(None, replicas.respawn, b)
            await wait_until(lambda: playing(5), 30, "the re-prompt after reconnect 2")
            assert await leases() == owners
            await respawn
            await replicas.kill(a)  # 3rd break: past the cap
            async with asyncio.timeout(60):
                result = await call
        finally:
            if not call.done():
                call.cancel()
            if respawn is not None:
                await asyncio.gather(respawn, return_exceptions=True)
        for port in (a, b):  # both replicas up again for whoever comes next
            if replicas.stack.processes["gateway"][replicas.procs[port]].poll() is not None:
                await asyncio.to_thread(replicas.respawn, port)

        assert [s.gateway for s in result.streams] == [replicas.url(p) for p in (a, b, a)]
        assert [s.close_code for s in result.streams] == [1006, 1006, 1006]  # each replica died under its socket
        assert result.said == [GIVE_UP_SAY] and "<Hangup/>" in result.twiml[-1]
        assert await get(bus, keys.reconnects(sid)) == b"3"
        texts = agent_texts(result)
        # turn 2 (the hours) was cut: said again after "cut off"; then the hoodie answered, cut, said again
        assert [t for t in texts if t.startswith(CUT)] == [texts[2], texts[4]], texts
        assert "open" in texts[1].lower() and "open" in texts[2].lower(), texts
        assert "hoodie" in texts[3].lower() and "hoodie" in texts[4].lower(), texts
        assert any("hoodie" in t for t in caller_texts(result)), caller_texts(result)
        await check_caller_audio(bus, result, lost={1: KILL_LOSS_FRAMES, 2: KILL_LOSS_FRAMES, 3: KILL_LOSS_FRAMES})
        by_gen = await audio_in(bus, sid)
        lost = [s.frames - len(by_gen[g]) for g, s in enumerate(result.streams, start=1)]
        print(f"caller frames lost per killed socket: {lost}; silence per reconnect: {silences(result)} s")
        check_no_sentence_twice(result)
        # nothing of a cut turn played on the new socket: its marks, if any played before the next kill (on a
        # loaded machine the re-prompt may not have finished a sentence by then), are the re-prompt's (turns 3, 5)
        for index, reprompt in ((2, 3), (4, 5)):
            marks = {w.name.split("-")[0] for w in result.wire if w.kind == "mark" and w.turn == index}
            assert marks <= {f"t{reprompt}"}, (index, marks)
        ended = [e for e in await lifecycle(bus, sid) if isinstance(e, ev.CallEnded)]
        assert [e.reason for e in ended] == ["stream lost"]
        assert (await bus.hgetall(keys.meta(sid)))["status"] == b"completed"
