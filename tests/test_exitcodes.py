"""The one mapping from the exceptions a command expects to its exit status and the line it prints."""

import errno

import pytest

from rnn_jax import checkpoint, config, corpora, epochs, exitcodes, scoring, signals, sweep
from rnn_jax.bench.common import ChildFailed
from rnn_jax.exitcodes import Exit


def failing(e: BaseException):
    def main():
        raise e

    return main


@pytest.mark.parametrize(
    "error,status",
    [
        (config.ConfigError("x"), Exit.USAGE),
        (corpora.DataError("x"), Exit.USAGE),
        (checkpoint.CheckpointError("x"), Exit.USAGE),
        (exitcodes.UsageError("x"), Exit.USAGE),
        (OSError(errno.ENOSPC, "No space left on device", "f"), Exit.FAILED),
        (sweep.JobFailed("x"), Exit.FAILED),
        (ChildFailed("x"), Exit.FAILED),
        (epochs.Diverged("x"), Exit.DIVERGED),
        (scoring.NonFinite("x"), Exit.DIVERGED),
        (signals.Interrupted("x"), Exit.INTERRUPTED),
        (sweep.Stopped("x"), Exit.INTERRUPTED),
        (KeyboardInterrupt(), Exit.INTERRUPTED),
    ],
    ids=lambda v: v.name if isinstance(v, Exit) else type(v).__name__,
)
def test_each_expected_exception_has_its_status(error, status, capsys):
    assert exitcodes.status_of(error) is status
    assert exitcodes.run(failing(error)) is status
    assert len(capsys.readouterr().err.splitlines()) == 1  # one line, no traceback


@pytest.mark.parametrize("error", [ValueError("a bug"), RuntimeError("a bug"), SystemExit(4)])
def test_an_unexpected_exception_keeps_its_traceback(error):
    assert exitcodes.status_of(error) is None
    with pytest.raises(type(error)):
        exitcodes.run(failing(error))


def test_the_lines_a_user_reads(capsys):
    exitcodes.run(failing(config.ConfigError("--hidden must be positive")))
    assert capsys.readouterr().err == "error: --hidden must be positive\n"
    exitcodes.run(failing(OSError(errno.EFBIG, "File too large", "/r/params.npz")))
    assert capsys.readouterr().err == "error: /r/params.npz: File too large\n"
    exitcodes.run(failing(OSError(errno.EIO, "Input/output error")))
    assert capsys.readouterr().err == "error: a file of the run: Input/output error\n"
    exitcodes.run(failing(signals.Interrupted("stopped by SIGTERM after epoch 3; resume with ...")))
    assert capsys.readouterr().err == "stopped by SIGTERM after epoch 3; resume with ...\n"  # a stop, not an error
    exitcodes.run(failing(KeyboardInterrupt()))
    assert capsys.readouterr().err == "stopped by SIGINT\n"


def test_a_command_adds_its_note_to_a_status_and_its_own_sigint_line(capsys):
    notes = {Exit.FAILED: "; the files written before are intact", Exit.INTERRUPTED: ". Continue with: cmd"}
    assert exitcodes.run(failing(OSError(errno.ENOSPC, "No space left on device", "f")), notes=notes) is Exit.FAILED
    assert capsys.readouterr().err == "error: f: No space left on device; the files written before are intact\n"
    assert exitcodes.run(failing(sweep.Stopped("stopped by SIGTERM")), notes=notes) is Exit.INTERRUPTED
    assert capsys.readouterr().err == "stopped by SIGTERM. Continue with: cmd\n"
    assert exitcodes.run(failing(KeyboardInterrupt()), sigint="stopped early", notes=notes) is Exit.INTERRUPTED
    assert capsys.readouterr().err == "stopped early. Continue with: cmd\n"
    assert exitcodes.run(failing(corpora.DataError("no corpus")), notes=notes) is Exit.USAGE
    assert capsys.readouterr().err == "error: no corpus\n"  # a note belongs to its status only


def test_a_finished_main_is_ok_or_its_own_status(capsys):
    assert exitcodes.run(lambda: None) is Exit.OK
    assert exitcodes.run(lambda: Exit.DIVERGED) is Exit.DIVERGED
    assert capsys.readouterr().err == ""


def test_a_usage_error_is_a_value_error():
    """Callers that catch ValueError (a prompt file, a benchmark report) still catch it."""
    assert issubclass(exitcodes.UsageError, ValueError)
