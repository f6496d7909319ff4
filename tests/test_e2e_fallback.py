"""A cloud recognizer dying mid-call: the stack on STT_PROVIDER=deepgram, pointed at a local server that speaks
the handshake and takes the audio, then goes away. stt falls back to PocketSphinx with the audio it buffered and
the call carries on to its goodbye."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.server import Server, ServerConnection, serve

from voxcart.cli.calling import DEV_AUTH_TOKEN, build_items
from voxcart.cli.simulator import SimulatorConfig, simulate_call
from voxcart.cli.stack import Stack

pytestmark = pytest.mark.e2e

KEY = "dg-test-key"
KILL_AFTER_BYTES = 8000 * 7
"""Seven seconds of μ-law: past the greeting, into the caller's first sentence."""


@dataclass
class DyingDeepgram:
    """Accepts Deepgram live connections, checks the key, swallows audio, and shuts down for good after
    ``KILL_AFTER_BYTES`` of one call's audio (as a provider outage would)."""

    server: Server | None = None
    received: int = 0
    auth: list[str] = field(default_factory=list)
    killed: threading.Event = field(default_factory=threading.Event)

    def handler(self, ws: ServerConnection) -> None:
        self.auth.append(ws.request.headers.get("Authorization", "") if ws.request else "")
        with contextlib.suppress(ConnectionClosed):  # the client's reconnect races the shutdown
            for message in ws:
                if isinstance(message, bytes):
                    self.received += len(message)
                    if self.received >= KILL_AFTER_BYTES and not self.killed.is_set():
                        self.killed.set()
                        assert self.server is not None
                        threading.Thread(target=self.server.shutdown, daemon=True).start()
                        return

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"ws://127.0.0.1:{self.server.socket.getsockname()[1]}/v1/listen"


@pytest.fixture(scope="module")
def deepgram() -> Iterator[DyingDeepgram]:
    fake = DyingDeepgram()
    fake.server = serve(fake.handler, "127.0.0.1", 0)
    thread = threading.Thread(target=fake.server.serve_forever, daemon=True)
    thread.start()
    yield fake
    fake.server.shutdown()
    thread.join(timeout=5)


@pytest.fixture(scope="module")
def cloud_stack(stack_runner: Callable[..., AbstractContextManager[Stack]], deepgram: DyingDeepgram) -> Iterator[Stack]:
    env = {"STT_PROVIDER": "deepgram", "DEEPGRAM_API_KEY": KEY, "DEEPGRAM_URL": deepgram.url}
    with stack_runner("cloud", {"stt": 1, "brain": 1, "tts": 1}, env) as running:
        yield running


async def test_a_cloud_recognizer_dying_mid_call_falls_back_and_the_call_goes_on(
    cloud_stack: Stack, deepgram: DyingDeepgram
) -> None:
    items = await asyncio.to_thread(build_items, ["what is your return policy", "thank you goodbye"])
    config = SimulatorConfig(gateway_url=cloud_stack.gateway_url, auth_token=DEV_AUTH_TOKEN, from_number="+15550004444")
    result = await simulate_call(config, items)

    assert deepgram.killed.is_set() and deepgram.auth and deepgram.auth[0] == f"Token {KEY}"
    assert result.record is not None
    agent = [t["text"] for t in result.record["turns"] if t["speaker"] == "agent"]
    caller = [t["text"] for t in result.record["turns"] if t["speaker"] == "caller"]
    assert any("return" in text for text in caller), caller  # heard by the embedded recognizer after the outage
    assert any("days" in text.lower() for text in agent[1:]), agent  # the return policy was answered
    assert result.ended_by == "agent", "the goodbye ended the call"
