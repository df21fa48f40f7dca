"""Whether a process still runs: what tells a dead run's leftover temporary folders (named with the
writer's PID) from a live run's work, in the converter and the trainer alike."""

from __future__ import annotations

import os


def process_alive(pid: int) -> bool:
    """Whether a process with this PID exists (another user's counts: signalling it is merely refused)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
