"""Failures to write a run's output (disk full, read-only or forbidden folder), reported in one line.

The CLIs (`train`, `kuavo_eval`, `kuavo_export`) print an `OutputError` as `<prog>: error: <message>`
and exit 1, like a configuration error (exit 2) and unlike a bug (a traceback).
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from safetensors import SafetensorError

# The errors a write can meet that are the disk's or the folder's, not the program's.
WRITE_ERRNOS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}
# safetensors reports a failed write as SafetensorError("... I/O error: <strerror> (os error N)").
WRITE_FAILURES = (OSError, SafetensorError)


class OutputError(RuntimeError):
    """Writing a run's output failed for a reason outside the program; the message names the path and the fix."""


def reason(exc: BaseException) -> str:
    """What went wrong, in words: the errno's meaning for an OSError, else the (one-line) message."""
    if isinstance(exc, OSError) and exc.errno in WRITE_ERRNOS:
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{WRITE_ERRNOS[exc.errno]}{where}"
    for number, words in WRITE_ERRNOS.items():
        if f"os error {number})" in str(exc):
            return words
    return " ".join(str(exc).split()) or type(exc).__name__


def is_write_failure(exc: BaseException) -> bool:
    """An OSError with one of WRITE_ERRNOS, or safetensors' report of one."""
    if isinstance(exc, OSError):
        return exc.errno in WRITE_ERRNOS
    return isinstance(exc, SafetensorError) and any(f"os error {n})" in str(exc) for n in WRITE_ERRNOS)


def check_writable(directory: Path, what: str, option: str) -> None:
    """Create `directory` if needed and write (then remove) a probe file in it, so a read-only, full or
    forbidden output folder is an OutputError before any work, naming `what` and the `option` to change."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        descriptor, probe = tempfile.mkstemp(prefix=".write-probe-", dir=directory)
        os.close(descriptor)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"{what} {directory} cannot be written: {reason(exc)}; choose another one ({option}) or "
                          "make it writable") from None
