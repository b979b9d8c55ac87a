"""A worker's CPU priority below the web process's, so that on a machine they share the
receipt for an upload comes before the processing of earlier ones (which can wait)."""

import os
from contextlib import suppress
from pathlib import Path

AUTOGROUP = Path("/proc/self/autogroup")


def lower_cpu_priority(niceness):
    """Run this process (and the children it starts) at `niceness`, never raising its priority.

    Linux's autogroup scheduling shares the CPU fairly between sessions first and only then by
    nice value within a session, so the nice value of a process that leads a session of its own
    (as Procfile runners, `make run` and most supervisors start each process) alone changes
    nothing against the web process: its session's group is lowered too. A process in someone
    else's session leaves that group alone, since the web may be in it."""
    if niceness <= 0:
        return
    current = os.getpriority(os.PRIO_PROCESS, 0)
    if current < niceness:
        os.setpriority(os.PRIO_PROCESS, 0, niceness)
    if os.getsid(0) == os.getpid():
        # Absent (another OS, or a kernel without autogroups) or refused: the nice value is
        # all there is.
        with suppress(OSError):
            AUTOGROUP.write_text(f"{niceness}\n")
