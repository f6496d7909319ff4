"""``voxcart chat`` on a real Redis with a real brain worker in this process (the demo store, today pinned):
the greeting and an order-status dialog for a known caller, the ``--json`` turns with keyed digits and a transfer,
piped input, the call opened and ended on the bus as the gateway does, and the errors a user can make."""

from __future__ import annotations

import contextlib
import io
import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from voxcart.brain.store import demo_seed_path
from voxcart.cli.chat import CallerLine, ChatError, ChatSession, ChatTimeout, parse_line, run_chat
from voxcart.cli.main import main
from voxcart.common import events as ev
from voxcart.common.bus import Output, RedisBus, keys
from voxcart.common.seed import load_seed
from voxcart.common.settings import Settings, load_settings

SEED = load_seed(demo_seed_path())
ORDER = next(o for o in SEED.orders if o.number == "10023")
OWNER = next(c for c in SEED.customers if c.id == ORDER.customer)
SPOKEN_ORDER = " ".join(ORDER.number)


@pytest.fixture
async def bus(redis_bus: RedisBus) -> AsyncIterator[RedisBus]:
    """The session's Redis, flushed."""
    yield redis_bus


@pytest.fixture
def settings(redis_url: str) -> Settings:
    return load_settings({"REDIS_URL": redis_url, "STORE_TODAY": "2026-11-20"}, env_file=None)


def script(tmp_path: Path, *lines: str) -> str:
    path = tmp_path / "caller.txt"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


async def chat(settings: Settings, **kwargs: object) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = await run_chat(settings, out=out, err=err, **kwargs)  # type: ignore[arg-type]
    return code, out.getvalue(), err.getvalue()


def sid_in(err: str) -> str:
    found = re.search(r"chat (CA[0-9a-f]{32}) ", err)
    assert found, err
    return found.group(1)


# -- line syntax -------------------------------------------------------------------------------------------------


def test_lines_are_said_keyed_or_skipped() -> None:
    assert parse_line("  where is my order ") == CallerLine(raw="where is my order", text="where is my order")
    assert parse_line("#10023#") == CallerLine(raw="#10023#", keys="10023#")
    assert parse_line("#10023") == CallerLine(raw="#10023", keys="10023")
    assert parse_line("DTMF: 1 0 0 2 3 #") == CallerLine(raw="DTMF: 1 0 0 2 3 #", keys="10023#")
    assert parse_line("dtmf:*9") == CallerLine(raw="dtmf:*9", keys="*9")
    for skipped in ("", "   ", "# a comment", "#", "#order 10023"):
        assert parse_line(skipped) is None, skipped


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("dtmf:", "keys must be 0-9, * or # (got none)"),
        ("dtmf:12a", "keys must be 0-9, * or # (got a)"),
        ("dtmf:1#2", "'#' ends an entry"),
        ("#1#2", "'#' ends an entry"),
    ],
)
def test_bad_keys_are_refused_with_where(line: str, message: str) -> None:
    with pytest.raises(ChatError, match=re.escape(message)) as info:
        parse_line(line, "calls.txt:7")
    assert str(info.value).startswith(f"calls.txt:7: {line!r}")


# -- whole chats -----------------------------------------------------------------------------------------------


@pytest.mark.redis
async def test_known_caller_hears_their_orders_status_and_goodbye_ends_the_chat(
    bus: RedisBus, settings: Settings, tmp_path: Path
) -> None:
    assert ORDER.status == "shipped" and OWNER.phone
    lines = script(tmp_path, "# Dana calls about her order", "", "where is my order", "yes", "goodbye", "hello?")
    code, out, err = await chat(settings, from_number=OWNER.phone, script=lines)
    assert code == 0, err
    said = out.splitlines()
    assert said[0] == f"agent:  Hi {OWNER.name.split()[0]}, thanks for calling {SEED.store.name}.", out
    assert "caller: where is my order" in said and "caller: yes" in said
    answer = out.split("caller: yes", 1)[1].split("caller: goodbye", 1)[0]
    assert f"Order {SPOKEN_ORDER} has shipped with {ORDER.carrier}" in answer, out
    assert said[-1] == "(the agent hung up)", out
    assert "hello?" not in out, "nothing is sent after the agent hung up"
    assert "brain in this process" in err

    sid = sid_in(err)
    meta = {k: v.decode() for k, v in (await bus.hgetall(keys.meta(sid))).items()}
    assert meta["from"] == OWNER.phone and meta["status"] == "completed" and meta["outcome"] == "agent ended"
    assert await bus.zscores(keys.ACTIVE_CALLS, [sid]) == [None], "the call left the active set"
    assert 0 < await bus.redis.pttl(keys.turns(sid)) <= keys.ENDED_CALL_TTL_MS
    lifecycle = [ev.decode(e.data) for e in await bus.range(keys.LIFECYCLE)]
    assert [type(e).__name__ for e in lifecycle if e.call_sid == sid] == ["CallStarted", "CallEnded"]
    records = [ev.decode(e.data) for e in await bus.range(keys.turns(sid))]
    assert [(r.speaker, r.text) for r in records if isinstance(r, ev.TurnRecord) and r.speaker == "caller"] == [
        ("caller", "where is my order"),
        ("caller", "yes"),
        ("caller", "goodbye"),
    ]


@pytest.mark.redis
async def test_json_turns_with_keyed_digits_and_a_transfer(bus: RedisBus, settings: Settings, tmp_path: Path) -> None:
    lines = script(tmp_path, "where is my order", f"#{ORDER.number}#", "dtmf: 9 9 9 9 9 #", "let me talk to a person")
    code, out, err = await chat(settings, script=lines, as_json=True)
    assert code == 0, err
    turns = [json.loads(line) for line in out.splitlines()]
    assert all(set(t) == {"turn", "caller", "agent", "intent", "end_call", "transfer_to"} for t in turns), turns
    assert [t["turn"] for t in turns] == [1, 2, 3, 4, 5]
    assert [t["caller"] for t in turns] == [None, "where is my order", f"#{ORDER.number}#", "dtmf: 9 9 9 9 9 #",
                                            "let me talk to a person"]  # fmt: skip
    assert [t["intent"] for t in turns[:3]] == ["greeting", "order_status", "order_status"]
    assert turns[0]["agent"][0].startswith("Good afternoon"), "a withheld number is greeted without a name"
    assert any("order number" in s for s in turns[1]["agent"]), turns[1]
    assert f"I heard {SPOKEN_ORDER}." in turns[2]["agent"], "the keyed digits reached the dialog"
    said = " ".join(s for t in turns for s in t["agent"]).lower()
    assert ORDER.carrier
    assert "shipped" not in said and ORDER.carrier.lower() not in said, "an unverified caller is not told"
    assert turns[-1]["intent"] == "human" and turns[-1]["transfer_to"] == SEED.store.handoff_number, turns[-1]
    assert not any(t["end_call"] for t in turns)
    meta = await bus.hgetall(keys.meta(sid_in(err)))
    assert meta["outcome"] == b"transferred" and meta["transfer_to"] == (SEED.store.handoff_number or "").encode()


@pytest.mark.redis
async def test_piped_lines_and_end_of_input(bus: RedisBus, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("is the blue hoodie in stock in medium\n"))
    code, out, err = await chat(settings, brain="local")
    assert code == 0, err
    assert "caller: is the blue hoodie in stock in medium" in out
    assert out.splitlines()[-1] == "(the caller hung up)", out
    meta = await bus.hgetall(keys.meta(sid_in(err)))
    assert meta["status"] == b"completed" and meta["outcome"] == b"caller hung up"


def test_the_chat_subcommand(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("STORE_TODAY", "2026-11-20")
    monkeypatch.chdir(tmp_path)  # no .env
    lines = script(tmp_path, "what is your return policy", "thanks goodbye")
    assert main(["chat", "--from", OWNER.phone or "", "--script", lines, "--json", "--brain", "local"]) == 0
    turns = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [t["intent"] for t in turns][0] == "greeting" and turns[-1]["end_call"] is True, turns


@pytest.mark.redis
def test_interactive_prompt_on_a_terminal(redis_url: str, tmp_path: Path) -> None:
    """On a terminal: a prompt per line, typed lines are not echoed back as ``caller:``, a bad line is refused and
    the prompt comes back, Ctrl-D ends the chat."""
    leader, follower = pty.openpty()
    env = {**os.environ, "REDIS_URL": redis_url, "STORE_TODAY": "2026-11-20"}
    cmd = [sys.executable, "-m", "voxcart.cli.main", "chat", "--from", OWNER.phone or "", "--brain", "local"]
    proc = subprocess.Popen(cmd, stdin=follower, stdout=follower, stderr=follower, env=env, cwd=tmp_path)
    os.close(follower)
    seen = b""

    def read_until(marker: bytes, timeout: float = 20.0) -> None:
        nonlocal seen
        deadline = time.monotonic() + timeout
        while marker not in seen:
            assert time.monotonic() < deadline, f"no {marker!r} in {seen.decode(errors='replace')}"
            if select.select([leader], [], [], 0.1)[0]:
                with contextlib.suppress(OSError):  # EIO once the child has gone
                    seen += os.read(leader, 4096)

    try:
        read_until(b"How can I help you today?")
        read_until(b"caller> ")
        os.write(leader, b"dtmf:12x\n")
        read_until(b"keys must be 0-9")
        os.write(leader, b"where is my order\n")
        read_until(b"Is this about order")
        read_until(b"caller> ")
        os.write(leader, b"\x04")  # Ctrl-D
        read_until(b"(the caller hung up)")
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(leader)
    text = seen.decode(errors="replace").replace("\r\n", "\n")
    assert "caller: where is my order" not in text, "typed lines are not printed again"
    assert text.count("caller> ") == 3, text


# -- errors -----------------------------------------------------------------------------------------------------


def test_the_reply_timeout_must_be_positive(capsys: pytest.CaptureFixture[str]) -> None:
    for bad in ("0", "-1", "soon"):
        with pytest.raises(SystemExit) as info:
            main(["chat", "--timeout", bad])
        assert info.value.code == 2
        assert f"argument --timeout: {bad!r}" in capsys.readouterr().err


async def test_a_missing_script_is_a_usage_error(settings: Settings, tmp_path: Path) -> None:
    code, out, err = await chat(settings, script=str(tmp_path / "nope.txt"))
    assert code == 2 and out == ""
    assert f"script file {str(tmp_path / 'nope.txt')!r} does not exist" in err


async def test_a_bad_script_line_names_file_and_line(settings: Settings, tmp_path: Path) -> None:
    path = script(tmp_path, "hello", "# keys next", "dtmf:12x")
    code, _, err = await chat(settings, script=path)
    assert code == 2 and f"{path}:3: 'dtmf:12x'" in err, err


async def test_unreachable_redis(tmp_path: Path) -> None:
    from voxcart.common.localredis import free_port

    url = f"redis://127.0.0.1:{free_port()}/0"
    settings = load_settings({"REDIS_URL": url}, env_file=None)
    code, _, err = await chat(settings, script=script(tmp_path, "hello"))
    assert code == 1 and f"cannot reach Redis at {url}" in err, err


@pytest.mark.redis
async def test_no_running_brain(bus: RedisBus, settings: Settings, tmp_path: Path) -> None:
    code, _, err = await chat(settings, script=script(tmp_path, "hello"), brain="running")
    assert code == 1 and "no brain replica is serving" in err, err


@pytest.mark.redis
async def test_a_silent_brain_times_out_naming_the_turn(bus: RedisBus, settings: Settings, tmp_path: Path) -> None:
    # a replica that beats but never answers: chat uses it (auto) and gives up on the greeting
    await bus.zadd(keys.workers("brain"), {"mute-brain": ev.now_ms()})
    code, _, err = await chat(settings, script=script(tmp_path, "hello"), timeout=0.5)
    assert code == 1 and "the brain replicas serving it" in err
    assert "no reply to the greeting within 0.5 s" in err, err

    # a greeting, then nothing: the timeout names the turn
    session = ChatSession(bus, reply_timeout=0.3)
    say = ev.Say(call_sid=session.sid, turn_id="t1", turn_no=1, seq=0, text="Hello.", last=True)
    await bus.publish([Output(keys.tts(session.sid), ev.encode(say))])
    assert (await session.open()).agent == ["Hello."]
    with pytest.raises(ChatTimeout, match=re.escape("no reply to turn 2 (the answer to 'hello') within 0.3 s")):
        await session.send(CallerLine(raw="hello", text="hello"))
    await session.close()
    assert (await bus.hgetall(keys.meta(session.sid)))["outcome"] == b"caller hung up"


@pytest.mark.redis
async def test_llm_mode_chat_streams_the_models_reply_and_its_tools_guard_the_order(
    bus: RedisBus, redis_url: str, tmp_path: Path
) -> None:
    """``BRAIN_MODE=llm``: chat's in-process brain is the one ``serve brain`` builds, so the model's streamed
    sentences are what the caller reads, and a tool call for an order from an unverified caller reveals nothing."""
    from voxcart.brain.llm.testing import ScriptedLlmServer, text_reply, tool_reply

    async with ScriptedLlmServer() as server:
        server.script(
            tool_reply(("call_1", "order_status", {"order_number": ORDER.number})),
            text_reply("I can help with that. ", "First, what is the ZIP code on the order?"),
        )
        env = {"REDIS_URL": redis_url, "STORE_TODAY": "2026-11-20", "BRAIN_MODE": "llm"}
        env |= {"LLM_BASE_URL": server.base_url, "LLM_MODEL": "scripted"}
        code, out, err = await chat(load_settings(env, env_file=None), script=script(tmp_path, "where is order 10023"))
        tool_results = [m for r in server.requests for m in r["messages"] if m.get("role") == "tool"]
    assert code == 0, err
    assert "agent:  I can help with that.\nagent:  First, what is the ZIP code on the order?\n" in out, out
    said = out.lower()
    assert "shipped" not in said and (ORDER.carrier or "").lower() not in said, out
    assert len(tool_results) == 1 and "verif" in tool_results[0]["content"].lower(), tool_results
    assert (ORDER.tracking or "") not in tool_results[0]["content"], "the tool itself kept the order's details back"
