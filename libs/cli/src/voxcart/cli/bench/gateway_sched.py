"""How ``voxcart bench gateway --pin`` gets the gateway and its callers the CPU they would have alone.

Pinning keeps the bench's own processes off the gateway's CPU, not the rest of the machine's work. On Linux with
``sched_autogroup`` (``/proc/sys/kernel/sched_autogroup_enabled``) the scheduler shares a CPU first between
*sessions*, each with one weight whatever the nice values inside it: another session's ``nice 19`` job weighs as
much as the whole bench, and a session's weight is split over the CPUs its processes run on, so a gateway in the
bench's session (callers, Redis and the stand-in agent on the other CPU) held about half a share on its own CPU.
Even with the most weight, a task woken on a busy CPU waits for the running one's time slice: at 200 calls the
gateway wakes thousands of times a second. Measured at 200 calls on a 2-CPU machine shared with other work (load
3-11): in the bench's session the gateway waited ~0.5 s a second for its CPU while using 0.5 of it (jitter p99
50-70 ms, underruns); in a session of its own at autogroup nice :data:`NICE`, 0.08-0.2 s a second (jitter p99
7-25 ms with the load, no underrun); as a real-time task (``SCHED_RR``, :data:`RT_PRIORITY`), 0.0002 s (4.4 ms).

So, where the bench may raise priorities (root or ``CAP_SYS_NICE``), the gateway runs as the lowest real-time
priority (:func:`realtime`): on its CPU it runs whenever it has work and leaves every other cycle to the rest, which
is what "alone on its CPU" means (the kernel's real-time throttling still keeps 5 % of the CPU for others should
it ever spin). Each caller process runs in a session of its own (:func:`own_session`) at autogroup nice
:data:`NICE` (:func:`raise_priority`). Where priorities may not be raised, they keep the default weight, and the
report's ``waited_for_cpu_ms_per_s`` and the callers' tick lateness say when the machine was short of CPU.

Invariants: nothing here raises; each function says whether it did what it names.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Final

__all__ = ["NICE", "RT_PRIORITY", "own_session", "raise_priority", "realtime"]

NICE: Final = -10
"""The autogroup nice of the gateway's and each caller process's session (``-20..19``; 0 is the default)."""
RT_PRIORITY: Final = 1
"""The gateway's ``SCHED_RR`` priority: the lowest real-time one (above every ordinary task, below the kernel's)."""


def realtime(pid: int, priority: int = RT_PRIORITY, proc: Path = Path("/proc")) -> bool:
    """Make every thread of process ``pid`` ``SCHED_RR`` at ``priority`` (threads it starts later inherit it from
    the main thread): whether all of them took it."""
    try:
        tids = [int(task.name) for task in (proc / str(pid) / "task").iterdir()]
        for tid in tids:
            os.sched_setscheduler(tid, os.SCHED_RR, os.sched_param(priority))
    except (OSError, ValueError, AttributeError):  # not allowed, gone, or not Linux
        return False
    return bool(tids)


def raise_priority(pid: int | str = "self", nice: int = NICE, proc: Path = Path("/proc")) -> bool:
    """Set the autogroup nice of ``pid``'s session (``/proc/<pid>/autogroup``): whether it took."""
    try:
        (proc / str(pid) / "autogroup").write_text(str(nice))
    except OSError:  # no autogroup, or not allowed to raise a priority
        return False
    return True


def own_session(nice: int | None = NICE) -> bool:
    """Put this process in a session (so a scheduling group) of its own, with autogroup nice ``nice`` if given and
    allowed; the caller processes' pool initializer. Whether its priority was raised."""
    with contextlib.suppress(OSError):  # already a session leader
        os.setsid()
    return nice is not None and raise_priority("self", nice)
