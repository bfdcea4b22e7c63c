"""The test log is an append-only journal: whole lines, one write each, under a lock; torn tails set aside, never
lost; a failed append leaves the log as it was; readers skip what is not a row, saying where."""

import fcntl
import json
import os
import resource
import subprocess
import sys
import time

import pytest

from rnn_jax import testlog

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def log_rows(n, path, start=0):
    for i in range(start, start + n):
        testlog.record("timemachine", "test", f"m{i}", {"i": i}, {"loss": 1.0}, path)


def test_record_keeps_its_signature_and_adds_protocol_text_and_span(test_log):
    row = testlog.record("timemachine", "test", "rnn", {"a": 1}, {"loss": 1.0})  # positional, as before
    assert row["protocol"] == "stream" and "text_sha1" not in row and "span" not in row
    row = testlog.record(
        "timemachine", "test", "rnn", {"a": 1}, {"loss": 1.0}, test_log, protocol="windows", text_sha1="ab", span=(3, 9)
    )
    assert (row["protocol"], row["text_sha1"], row["span"]) == ("windows", "ab", [3, 9])
    assert testlog.read(test_log)[-1] == row
    assert test_log.read_bytes().endswith(b"\n") and len(test_log.read_bytes().splitlines()) == 2


@pytest.mark.parametrize("tail", [b'{"corpus": "timemachine", "spl', b'{"corpus": \n', b"[1, 2]\n"])
def test_a_torn_tail_is_set_aside_and_never_swallows_the_next_row(test_log, tail, capsys):
    log_rows(2, test_log)
    with open(test_log, "ab") as f:
        f.write(tail)
    log_rows(1, test_log, start=2)
    assert [r["model"] for r in testlog.read(test_log)] == ["m0", "m1", "m2"]
    aside = list(test_log.parent.glob(test_log.name + ".torn-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == tail  # kept, byte for byte
    assert "torn line" in capsys.readouterr().err
    assert all(json.loads(line) for line in test_log.read_bytes().splitlines())


def test_readers_skip_lines_that_are_not_rows_and_say_which(test_log, capsys):
    log_rows(1, test_log)
    with open(test_log, "a") as f:
        f.write('[]\n42\nnot json\n{"no": "corpus"}\n')
    log_rows(1, test_log, start=1)
    assert [r["model"] for r in testlog.read(test_log)] == ["m0", "m1"]
    err = capsys.readouterr().err
    assert all(f"line {n} " in err for n in (2, 3, 4, 5)) and "line 1 " not in err and "line 6 " not in err


FORK_WARNING = pytest.mark.filterwarnings("ignore:os.fork\\(\\) was called")

APPEND = (
    "import sys; from pathlib import Path; from rnn_jax import testlog; "
    "[testlog.record('timemachine', 'test', sys.argv[2] + str(i), {}, {'loss': 1.0}, Path(sys.argv[1])) "
    "for i in range(int(sys.argv[3]))]"
)


def appender(path, name, n, **popen):
    return subprocess.Popen(
        [sys.executable, "-c", APPEND, str(path), name, str(n)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


@FORK_WARNING
def test_a_failed_append_leaves_the_log_as_it_was_and_names_it(test_log):
    log_rows(3, test_log)
    before = test_log.read_bytes()
    limit = len(before) + 10  # room for part of a row, not all of it

    def limited():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = appender(test_log, "x", 1, preexec_fn=limited)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert str(test_log) in err.strip().splitlines()[-1] and "left as it was" in err
    assert test_log.read_bytes() == before
    log_rows(1, test_log, start=3)  # the limit lifted: the log goes on
    assert [r["model"] for r in testlog.read(test_log)] == ["m0", "m1", "m2", "m3"]


@pytest.mark.slow
def test_concurrent_writers_each_write_whole_lines(test_log):
    procs = [appender(test_log, f"p{k}-", 40) for k in range(4)]
    for p in procs:
        assert p.wait(timeout=120) == 0, p.stderr.read()
    lines = test_log.read_bytes().splitlines()
    assert len(lines) == 160 and all(isinstance(json.loads(line), dict) for line in lines)
    assert len({json.loads(line)["model"] for line in lines}) == 160


@pytest.mark.slow
def test_a_writer_waits_for_the_lock_another_process_holds(test_log):
    log_rows(1, test_log)
    fd = os.open(testlog.lock_path(test_log), os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        proc = appender(test_log, "late", 1)
        time.sleep(3)  # the child has started and is waiting on the lock
        assert proc.poll() is None and len(test_log.read_bytes().splitlines()) == 1
    finally:
        os.close(fd)
    assert proc.wait(timeout=60) == 0
    assert [r["model"] for r in testlog.read(test_log)] == ["m0", "late0"]
