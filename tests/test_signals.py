"""Stopping a run cleanly: a signal becomes a flag checked between epochs, a second one ends the process at once."""

import os
import signal
import subprocess
import sys
import threading

import pytest

from rnn_jax import signals
from rnn_jax.exitcodes import Exit


@pytest.mark.parametrize("sig", signals.StopSignals.SIGNALS, ids=lambda s: s.name)
def test_a_signal_is_a_flag_the_run_checks_and_the_handlers_come_back(sig):
    before = {s: signal.getsignal(s) for s in signals.StopSignals.SIGNALS}
    with signals.StopSignals() as stop:
        stop.check("before the first epoch")  # nothing received: nothing raised
        os.kill(os.getpid(), sig)
        assert stop.received == sig.name
        with pytest.raises(signals.Interrupted, match=f"stopped by {sig.name} after epoch 3"):
            stop.check("after epoch 3")
    assert {s: signal.getsignal(s) for s in signals.StopSignals.SIGNALS} == before


def test_the_first_signal_is_the_one_reported():
    with signals.StopSignals() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.received == "SIGTERM"
        stop._handle(signal.SIGHUP, None)
        assert stop.received == "SIGTERM"


def test_outside_the_main_thread_nothing_is_installed():
    before = signal.getsignal(signal.SIGTERM)
    seen = {}

    def enter():
        with signals.StopSignals() as stop:
            seen["pipe"], seen["handler"] = stop.pipe, signal.getsignal(signal.SIGTERM)

    thread = threading.Thread(target=enter)
    thread.start()
    thread.join()
    assert seen == {"pipe": None, "handler": before}


def test_a_second_signal_ends_the_process_at_once_with_one_line():
    code = (
        "import os, signal, time\n"
        "from rnn_jax import signals\n"
        "with signals.StopSignals():\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    time.sleep(30)\n"  # an epoch that would not end soon
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == Exit.INTERRUPTED
    assert done.stderr.strip() == "stopped at once by a second signal; no checkpoint was written for the current epoch"
