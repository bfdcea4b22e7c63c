"""rnn_jax: character-level recurrent language models from scratch in JAX."""

import os
import signal
import sys

from rnn_jax.exitcodes import Exit

__version__ = "0.1.0"


def _stopped_while_starting(signum, frame):
    os.write(2, b"stopped by SIGINT while starting; nothing was written\n")
    os._exit(Exit.INTERRUPTED)


def started() -> None:
    """Ends the start-up handling of SIGINT (see below): from here the command line handles it itself."""
    if signal.getsignal(signal.SIGINT) is _stopped_while_starting:
        signal.signal(signal.SIGINT, signal.default_int_handler)


# `python -m rnn_jax.<tool>` (sys.argv[0] is "-m" while the module is located): a Ctrl-C during the seconds of
# imports that follow ends the process with one line instead of a KeyboardInterrupt traceback.
if sys.argv[:1] == ["-m"]:
    signal.signal(signal.SIGINT, _stopped_while_starting)
