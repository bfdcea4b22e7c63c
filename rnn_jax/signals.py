"""Stopping a run cleanly: SIGINT/SIGTERM/SIGHUP become a flag the run checks between epochs."""

from __future__ import annotations

import os
import signal
import threading

from rnn_jax.exitcodes import Exit


class Interrupted(RuntimeError):
    """SIGINT/SIGTERM/SIGHUP: the checkpoint was written; the message says how to resume."""

    exit_status = Exit.INTERRUPTED


class StopSignals:
    """Turns SIGINT/SIGTERM/SIGHUP into a flag the run checks between epochs; a second signal ends the process at once.

    The C-level handler writes each signal to a pipe that a thread watches, so the second signal acts even
    while the main thread is inside XLA (compiling, or running an epoch), where Python handlers wait.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self):
        self.received = None
        self.previous, self.pipe = {}, None

    def __enter__(self):
        if threading.current_thread() is not threading.main_thread():
            return self
        for sig in self.SIGNALS:
            self.previous[sig] = signal.signal(sig, self._handle)
        self.pipe = os.pipe()
        os.set_blocking(self.pipe[1], False)
        self.previous_fd = signal.set_wakeup_fd(self.pipe[1], warn_on_full_buffer=False)
        threading.Thread(target=self._watch, args=(self.pipe[0],), daemon=True).start()
        return self

    def _handle(self, signum, frame):
        self.received = self.received or signal.Signals(signum).name

    def _watch(self, fd: int) -> None:
        seen = 0
        while byte := os.read(fd, 1):
            if byte[0] not in self.SIGNALS:
                continue
            seen += 1
            self.received = self.received or signal.Signals(byte[0]).name
            if seen == 2:
                os.write(2, b"stopped at once by a second signal; no checkpoint was written for the current epoch\n")
                os._exit(Exit.INTERRUPTED)
        os.close(fd)

    def __exit__(self, *exc):
        if self.pipe is None:
            return
        signal.set_wakeup_fd(self.previous_fd)
        os.close(self.pipe[1])  # the watcher reads end-of-file and closes its end
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def check(self, what: str) -> None:
        """Raises Interrupted when a signal came before `what` (nothing new to save)."""
        if self.received:
            raise Interrupted(f"stopped by {self.received} {what}")
