"""malloc_trim gives the free pages glibc keeps back to the OS (the soak's slow RSS growth), from a daemon thread."""

from __future__ import annotations

import platform
import threading
from pathlib import Path

import pytest

from voxcart.common.memtrim import start_trimming, trim

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")


def rss_mib() -> float:
    status = Path("/proc/self/status").read_text()
    return next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS")) / 1024


def test_trim_returns_the_pages_of_freed_buffers() -> None:
    trim()
    # what many calls' audio buffers leave behind: buffers of every size over pymalloc's 512 bytes, most freed,
    # a few kept here and there so that glibc cannot give the pages back by shrinking its heap
    buffers = [bytes(700 + (i % 97) * 13) for i in range(120_000)]
    kept = buffers[::200]
    del buffers
    before = rss_mib()
    assert trim()
    after = rss_mib()
    assert before - after > 20, f"RSS {before:.1f} -> {after:.1f} MiB"
    assert len(kept) == 600


def test_trimming_runs_on_a_daemon_thread_until_stopped() -> None:
    stop = threading.Event()
    thread = start_trimming(interval_s=0.01, stop=stop)
    assert thread is not None and thread.daemon and thread.is_alive()
    stop.set()
    thread.join(1.0)
    assert not thread.is_alive()
