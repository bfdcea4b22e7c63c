"""The exit statuses every command line of the project ends with (train, evaluate, generate, baselines, bench and
the experiment scripts), so a calling script or a sweep reads one meaning from one number, and the one mapping
from the exceptions a command expects to its status and the line it prints."""

from __future__ import annotations

import enum
import sys
from collections.abc import Callable, Mapping


class Exit(enum.IntEnum):
    OK = 0
    FAILED = 1  # the file system failed (disk full, a size limit...), or a job of a sweep failed
    USAGE = 2  # a flag, corpus, checkpoint or run directory that cannot be used; nothing was changed
    DIVERGED = 3  # the loss or gradient became NaN/Inf (a result, not a crash: a sweep records it)
    INTERRUPTED = 130  # a signal stopped it (128 + SIGINT); the message says how to continue


class UsageError(ValueError):
    """An option or input file a command cannot use, found before any work."""

    exit_status = Exit.USAGE


def describe_os_error(e: OSError) -> str:
    """'<path>: <errno text>' of a failed file-system call."""
    where = e.filename if e.filename is not None else "a file of the run"
    return f"{where}: {e.strerror or e}"


def status_of(e: BaseException) -> Exit | None:
    """The status an exception ends a command with: its class's `exit_status`, FAILED for a failed file-system
    call, INTERRUPTED for SIGINT; None for anything else (a bug, left to show its traceback)."""
    status = getattr(e, "exit_status", None)
    if isinstance(status, Exit):
        return status
    if isinstance(e, OSError):
        return Exit.FAILED
    if isinstance(e, KeyboardInterrupt):
        return Exit.INTERRUPTED
    return None


def message_of(e: BaseException, status: Exit, sigint: str) -> str:
    """The line a command prints for an exception of that status: 'error: ...', or how it was stopped."""
    if isinstance(e, KeyboardInterrupt):
        return sigint
    if status is Exit.INTERRUPTED:  # the exception says where it stopped and how to continue
        return str(e)
    return f"error: {describe_os_error(e) if isinstance(e, OSError) else e}"


def run(
    main: Callable[[], int | None],
    *,
    notes: Mapping[Exit, str] | None = None,
    sigint: str = "stopped by SIGINT",
) -> int:
    """main()'s status (OK when it returns None), or the status of the exception it raised, with its line on stderr
    followed by the command's note for that status; `sigint` is the line for a SIGINT the command did not handle."""
    try:
        status = main()
    except BaseException as e:  # SIGINT included: one line, not a traceback
        failed = status_of(e)
        if failed is None:
            raise
        print(message_of(e, failed, sigint) + (notes or {}).get(failed, ""), file=sys.stderr)
        return failed
    return Exit.OK if status is None else status
