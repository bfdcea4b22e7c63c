"""The exit statuses every command line of the project ends with (train, evaluate, generate, baselines, bench and
the experiment scripts), so a calling script or a sweep reads one meaning from one number."""

from __future__ import annotations

import enum


class Exit(enum.IntEnum):
    OK = 0
    FAILED = 1  # the file system failed (disk full, a size limit...), or a job of a sweep failed
    USAGE = 2  # a flag, corpus, checkpoint or run directory that cannot be used; nothing was changed
    DIVERGED = 3  # the loss or gradient became NaN/Inf (a result, not a crash: a sweep records it)
    INTERRUPTED = 130  # a signal stopped it (128 + SIGINT); the message says how to continue
