"""Fault injection for the experiment layer: the scripts keep the training command line's promises.

Signals reach the training processes and a second run continues them; a run directory another process holds is
never removed; committed records are replaced only whole and never by a smoke run; bad arguments and failing
children are one clear line.
"""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import killpoints
import pytest

from experiments import ablations, common
from rnn_jax import config, sweep
from rnn_jax import experiments as experiments_lib
from rnn_jax.files import read_metrics
from rnn_jax.lock import Lock

EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"

REPO = EXPERIMENTS.parent
TINY = dataclasses.replace(experiments_lib.EXPERIMENTS["tiny"], max_tokens=600)
# A script over the tiny configuration, its runs and records under ROOT (argv: ROOT, then the script's flags).
DRIVER = """import dataclasses, sys
from pathlib import Path
from experiments import common
from rnn_jax import experiments as experiments_lib
root = Path(sys.argv[1])
common.RUNS, common.RESULTS = root / "runs", root / "results"
def main():
    args = common.parser("tiny").parse_args(sys.argv[2:])
    common.run_seeds("tiny", "tiny", dataclasses.replace(experiments_lib.EXPERIMENTS["tiny"], max_tokens=600), args)
common.entry(main)
"""


@pytest.fixture
def dirs(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(common, "RUNS", tmp_path / "runs")
    return tmp_path


def one_clear_line(err: str) -> str:
    assert "Traceback" not in err, err
    return err.strip().splitlines()[-1]


def committed_record(dirs) -> Path:
    """results/tiny.json as a finished 500-epoch, 3-seed sweep would have left it."""
    path = dirs / "results" / "tiny.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"name": "tiny", "config": {"epochs": 500}, "summary": {"seeds": 3}}, indent=1))
    return path


@pytest.mark.slow
def test_a_smoke_run_never_replaces_the_committed_record(dirs, data_dir, capsys):
    record = committed_record(dirs)
    before = record.read_bytes()
    for flags in (["--epochs", "1"], ["--seeds", "1"], ["--epochs", "500", "--seeds", "2"]):
        args = common.parser("t").parse_args(["--mode", "vmap", "--data-dir", str(data_dir), "--seeds", "1", *flags])
        assert common.is_smoke("tiny", args)
        common.run_seeds("tiny", "tiny", dataclasses.replace(TINY, epochs=1), args)
        assert record.read_bytes() == before
        assert json.loads((dirs / "results" / "smoke" / "tiny.json").read_text())["name"] == "tiny"
        assert "the committed results/tiny.json is unchanged" in capsys.readouterr().out
    args = common.parser("t").parse_args(
        [
            "--epochs",
            "1",
            "--seeds",
            "1",
            "--mode",
            "vmap",
            "--data-dir",
            str(data_dir),
            "--out",
            str(dirs / "elsewhere"),
        ]
    )
    common.run_seeds("tiny", "tiny", TINY, args)
    assert (dirs / "elsewhere" / "tiny.json").is_file() and record.read_bytes() == before
    args = common.parser("t").parse_args(
        ["--epochs", "1", "--seeds", "1", "--mode", "vmap", "--data-dir", str(data_dir), "--force"]
    )
    common.run_seeds("tiny", "tiny", TINY, args)  # asked for: replaced
    assert json.loads(record.read_text())["config"]["epochs"] == 1
    assert not common.is_smoke("tiny", common.parser("t").parse_args(["--epochs", "1", "--seeds", "1"]))


def test_a_record_is_replaced_whole_or_not_at_all(dirs):
    record = committed_record(dirs)
    before = record.read_bytes()
    code = (
        "from experiments import common; from pathlib import Path; "
        f"common.RESULTS = Path({str(dirs / 'results')!r}); common.write('tiny', {{'name': 'tiny', 'x': [0] * 9}})"
    )
    proc = subprocess.run(
        [*killpoints.python("mid-rewrite:tiny.json"), "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert record.read_bytes() == before


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--epochs", "0"], "argument --epochs: must be at least 1"),
        (["--seeds", "-1"], "argument --seeds: must be at least 1"),
        (["--seeds", "0"], "argument --seeds: must be at least 1"),
        (["--seeds", "1001"], "argument --seeds: must be in [1, 1000], got 1001"),
        (["--seeds", "9" * 30], f"argument --seeds: must be in [1, 1000], got {'9' * 30}"),
        (["--epochs", str(2**31)], f"argument --epochs: must be in [1, 2147483647], got {2**31}"),
        (["seq", "nosuch"], "unknown experiment(s) nosuch"),
    ],
)
def test_impossible_arguments_are_refused_before_anything_runs(dirs, capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        ablations.main(argv)
    assert e.value.code == 2
    assert message in one_clear_line(capsys.readouterr().err)
    assert not (dirs / "runs").exists() and not (dirs / "results").exists()


@pytest.mark.slow
def test_a_failing_training_process_is_one_error_line(tmp_path, data_dir, capsys):
    (tmp_path / "f").write_text("")  # a run directory that is a file
    with pytest.raises(SystemExit) as e:
        common.entry(lambda: sweep.run_jobs([("tiny", TINY, tmp_path / "f")], data_dir=str(data_dir)))
    assert e.value.code == 1
    line = one_clear_line(capsys.readouterr().err)
    assert line == f"error: {tmp_path / 'f'} failed (exit 2): --run-dir {tmp_path / 'f'} is a file, not a directory"


@pytest.mark.slow
def test_a_run_directory_another_process_holds_is_never_removed(dirs, data_dir, capsys):
    held = dirs / "runs" / "smoke" / "tiny" / "seed_0"  # another configuration's run, in use
    (held / "checkpoints").mkdir(parents=True)
    (held / "config.json").write_text(
        json.dumps({"experiment": "tiny", "config": config.to_dict(dataclasses.replace(TINY, hidden=99))})
    )
    args = common.parser("t").parse_args(
        ["--epochs", "2", "--seeds", "1", "--mode", "processes", "--data-dir", str(data_dir)]
    )
    lock = Lock(held).acquire()
    try:
        with pytest.raises(SystemExit) as e:
            common.entry(lambda: common.run_seeds("tiny", "tiny", TINY, args))
        assert e.value.code == 2
        assert f"{held} is in use by pid {os.getpid()}" in one_clear_line(capsys.readouterr().err)
        assert (held / "config.json").is_file() and (held / "checkpoints").is_dir()
    finally:
        lock.release()


@pytest.mark.slow
def test_a_signal_reaches_the_training_processes_and_running_again_continues(tmp_path, data_dir):
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    argv = [
        sys.executable,
        str(driver),
        str(tmp_path),
        "--seeds",
        "1",
        "--mode",
        "processes",
        "--epochs",
        "400",
        "--data-dir",
        str(data_dir),
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # the driver, a file elsewhere, imports this checkout's experiments
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run = tmp_path / "runs" / "smoke" / "tiny" / "seed_0"
    deadline = time.time() + 600  # a first epoch on a busy machine can take minutes
    while not (run / "metrics.jsonl").is_file() or not (run / "metrics.jsonl").read_text().strip():
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    line = one_clear_line(err)
    assert line.startswith("stopped by SIGTERM") and f"Continue with: python {driver}" in line
    Lock(run).acquire().release()  # the training process has ended too: no orphan holds the run
    stopped = read_metrics(run)
    assert 0 < len(stopped) < 400 and (run / "checkpoints").is_dir()
    again = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    rows = read_metrics(run)
    assert [r["epoch"] for r in rows] == list(range(1, 401))
    assert rows[: len(stopped)] == stopped  # continued, not started again
    assert json.loads((run / "config.json").read_text())["resumed"]
    record = json.loads((tmp_path / "results" / "smoke" / "tiny.json").read_text())
    assert len(record["seeds"][0]["curve"]) == 400
