"""uvicorn's websocket protocol with flow control by queue depth, not per message: what the gateway serves with.

uvicorn's ``websockets-sansio`` protocol stops reading the socket after *every* message it queues for the app and
starts again when the app has taken it: two ``epoll_ctl`` calls and two selector updates per inbound frame. A media
socket receives a frame every 20 ms, so at 200 calls that is 20,000 selector changes a second, measured at ~14 %
of the gateway's CPU (py-spy: ``pause_reading``/``resume_reading``). Here reading stops only when the app falls
:data:`HIGH_WATER` messages behind and resumes once it is down to :data:`LOW_WATER`: the same bound on what a
slow app buffers (at most ``HIGH_WATER`` messages of at most ``ws_max_size`` each), without the per-frame cost.

Invariants: messages reach the app in order and none is dropped; everything else (handshake, close, ping, sending)
is uvicorn's own code.
"""

from __future__ import annotations

from typing import Final

from uvicorn._types import ASGIReceiveEvent
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

__all__ = ["HIGH_WATER", "LOW_WATER", "MediaWebSocketProtocol"]

HIGH_WATER: Final = 32
"""Messages queued for the app at which the socket stops being read (0.64 s of media frames)."""
LOW_WATER: Final = 8
"""Messages still queued at which reading resumes."""


class MediaWebSocketProtocol(WebSocketsSansIOProtocol):
    """``WebSocketsSansIOProtocol`` that pauses reading at :data:`HIGH_WATER` queued messages (see the module)."""

    def send_receive_event_to_app(self) -> None:
        paused = self.read_paused
        self.read_paused = True  # the base pauses reading after every message unless already paused: skip that
        try:
            super().send_receive_event_to_app()
        finally:
            self.read_paused = paused
        if not self.read_paused and self.queue.qsize() >= HIGH_WATER:
            self.read_paused = True
            self.transport.pause_reading()

    async def receive(self) -> ASGIReceiveEvent:
        message = await self.queue.get()
        if self.read_paused and self.queue.qsize() <= LOW_WATER:
            self.read_paused = False
            self.transport.resume_reading()
        return message
