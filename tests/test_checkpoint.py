import json
import os
import shutil
import signal
import subprocess
import sys
import time

import killpoints
import numpy as np
import pytest

from rnn_jax import checkpoint, train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMON = ["--exp", "tiny", "--epochs", "5", "--checkpoint-every", "1", "--max-tokens", "600", "--predict-every", "0"]


def cli(run_dir, data_dir, *extra, kill_at=None, check=True):
    """Runs the training CLI in a fresh process (optionally SIGKILLed at a fault-injection point)."""
    proc = subprocess.run(
        [
            *killpoints.python(kill_at),
            "-m",
            "rnn_jax.train",
            *COMMON,
            "--run-dir",
            str(run_dir),
            "--data-dir",
            str(data_dir),
            "--quiet",
            *extra,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if kill_at:
        assert proc.returncode == -signal.SIGKILL, proc.stderr
    elif check:
        assert proc.returncode == 0, proc.stderr
    return proc


def rows(run_dir, keys=("epoch", "step", "loss", "perplexity", "grad_norm")):
    return [{k: r.get(k) for k in keys} for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())]


def params(run_dir):
    with np.load(run_dir / "params.npz") as f:
        return dict(f)


@pytest.mark.slow
@pytest.mark.parametrize("flags", [["--sampling", "seq"], ["--sampling", "random", "--lr-schedule", "cosine"]])
def test_killed_runs_resume_bit_identically(tmp_path, data_dir, flags):
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    assert train.main([*COMMON, *flags, "--run-dir", str(ref), "--data-dir", str(data_dir), "--quiet"]) == 0
    # killed right after the checkpoint of epoch 2, then (resumed) in the middle of epoch 4
    cli(cut, data_dir, *flags, kill_at="after-checkpoint:2")
    assert [r["epoch"] for r in rows(cut)] == [1, 2]
    cli(cut, data_dir, "--resume", kill_at="mid-epoch:4")
    assert [r["epoch"] for r in rows(cut)] == [1, 2, 3]
    assert train.main(["--run-dir", str(cut), "--resume", "--quiet"]) == 0  # resumed twice
    assert rows(cut) == rows(ref)
    for name, value in params(ref).items():
        np.testing.assert_array_equal(params(cut)[name], value, err_msg=name)
    assert len(json.loads((cut / "config.json").read_text())["resumed"]) == 2


@pytest.mark.slow
def test_resume_extends_a_finished_run(tmp_path, data_dir):
    cli(tmp_path / "r", data_dir, "--epochs", "2")
    assert train.main(["--run-dir", str(tmp_path / "r"), "--resume", "--epochs", "3", "--quiet"]) == 0
    assert [r["epoch"] for r in rows(tmp_path / "r")] == [1, 2, 3]


@pytest.fixture(scope="module")
def finished(tmp_path_factory, data_dir):
    run = tmp_path_factory.mktemp("finished") / "run"
    assert train.main([*COMMON, "--epochs", "3", "--run-dir", str(run), "--data-dir", str(data_dir), "--quiet"]) == 0
    return run


def copy_of(run, tmp_path):
    shutil.copytree(run, tmp_path / "run")
    return tmp_path / "run"


@pytest.mark.slow
def test_a_partly_written_checkpoint_is_ignored(finished, tmp_path, capsys):
    run = copy_of(finished, tmp_path)
    partial = run / "checkpoints" / "4.orbax-checkpoint-tmp-1700000000"  # what a write cut short leaves
    (partial / "state").mkdir(parents=True)
    (partial / "state" / "manifest.ocdbt").write_bytes(b"\x00" * 10)
    assert checkpoint.Checkpoints(run).latest_epoch() == 3
    assert train.main(["--run-dir", str(run), "--resume", "--epochs", "4", "--quiet"]) == 0
    assert [r["epoch"] for r in rows(run)] == [1, 2, 3, 4]


@pytest.mark.slow
def test_a_corrupt_checkpoint_fails_loudly_and_is_kept(finished, tmp_path, capsys):
    run = copy_of(finished, tmp_path)
    for f in (run / "checkpoints" / "3" / "state").rglob("*"):
        if f.is_file():
            f.write_bytes(b"garbage")
    assert train.main(["--run-dir", str(run), "--resume", "--epochs", "4", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "checkpoints/3 cannot be restored" in err and "Nothing was re-initialised" in err
    assert [r["epoch"] for r in rows(run)] == [1, 2, 3]  # nothing lost, nothing overwritten
    assert (run / "checkpoints" / "3").is_dir()


@pytest.mark.slow
@pytest.mark.parametrize(
    "argv,message",
    [
        (["--hidden", "32"], "hidden differs (the run has 16, asked 32)"),
        (["--sampling", "random"], "sampling differs"),
        (["--exp", "seq"], "belongs to experiment 'tiny'"),
        (["--corpus", "WAR"], "the corpus differs"),
    ],
)
def test_resume_refuses_another_run(finished, tmp_path, data_dir, capsys, argv, message):
    argv = [str(data_dir / "war_of_the_worlds.txt") if a == "WAR" else a for a in argv]
    assert train.main(["--run-dir", str(finished), "--resume", *argv, "--quiet"]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_a_scheduled_run_resumes_only_to_its_own_length(tmp_path, data_dir, capsys):
    run = tmp_path / "r"
    cli(run, data_dir, "--epochs", "2", "--lr-schedule", "cosine")
    before = rows(run)
    assert train.main(["--run-dir", str(run), "--resume", "--epochs", "3", "--quiet"]) == 2
    assert "its cosine step size falls over its 2 epochs" in capsys.readouterr().err
    assert rows(run) == before


@pytest.mark.slow
def test_a_new_run_never_overwrites_an_old_one(finished, data_dir, capsys):
    assert train.main([*COMMON, "--run-dir", str(finished), "--data-dir", str(data_dir), "--quiet"]) == 2
    assert "already holds a run; continue it with --resume" in capsys.readouterr().err


@pytest.mark.slow
def test_sigterm_writes_a_checkpoint_and_says_how_to_resume(tmp_path, data_dir):
    run = tmp_path / "run"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rnn_jax.train",
            *COMMON,
            "--epochs",
            "10000",
            "--run-dir",
            str(run),
            "--data-dir",
            str(data_dir),
            "--quiet",
            "--checkpoint-every",
            "0",
        ],
        cwd=REPO,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while not ((run / "metrics.jsonl").exists() and (run / "metrics.jsonl").read_text().count("\n") >= 2):
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "stopped by SIGTERM after epoch" in err and "--resume" in err
    last = rows(run)[-1]["epoch"]
    assert checkpoint.Checkpoints(run).latest_epoch() == last
    assert train.main(["--run-dir", str(run), "--resume", "--epochs", str(last + 1), "--quiet"]) == 0


@pytest.mark.slow
def test_skip_mode_counts_skips_and_stops_after_too_many(tmp_path, data_dir, capsys):
    diverging = ["--activation", "relu", "--clip-norm", "none", "--lr", "1e30", "--data-dir", str(data_dir)]
    argv = [*COMMON, *diverging, "--on-nonfinite", "skip", "--quiet"]
    assert train.main([*argv, "--epochs", "2", "--max-skips", "100000", "--run-dir", str(tmp_path / "a")]) == 0
    got = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert got[0]["skipped"] > 0 and got[1]["skipped"] == got[1]["step"] - got[0]["step"]  # all of epoch 2
    assert got[-1]["loss"] is None  # no finite step to average
    assert all(np.isfinite(v).all() for v in params(tmp_path / "a").values())
    assert train.main([*argv, "--max-skips", "5", "--run-dir", str(tmp_path / "b")]) == 3
    assert "more than 5 updates in a row were skipped" in capsys.readouterr().err


@pytest.mark.slow
def test_stop_mode_writes_no_nonfinite_checkpoint(tmp_path, data_dir):
    run = tmp_path / "r"
    argv = [
        *COMMON,
        "--activation",
        "relu",
        "--clip-norm",
        "none",
        "--lr",
        "1e30",
        "--run-dir",
        str(run),
        "--data-dir",
        str(data_dir),
        "--quiet",
    ]
    assert train.main(argv) == 3
    assert rows(run, ("epoch", "nonfinite"))[-1] == {"epoch": 1, "nonfinite": True}
    assert checkpoint.Checkpoints(run).latest_epoch() is None


@pytest.mark.slow
def test_load_params_reads_the_latest_checkpoint(finished):
    got, meta = checkpoint.load_params(finished)
    for name, value in params(finished).items():
        np.testing.assert_array_equal(got[name], value)
    assert meta["config"]["hidden"] == 16 and meta["vocab"][0] == "<unk>"
    with pytest.raises(checkpoint.CheckpointError, match="holds no checkpoint"):
        checkpoint.load_params(finished / "checkpoints" / "3")


def test_verify_accepts_namedtuple_states_restored_as_dicts():
    import optax

    from rnn_jax.checkpoint import CheckpointError, checksums, verify

    state = {"opt_state": optax.adam(0.1).init({"w": np.ones(3, np.float32)})}
    # a restore without a target tree reads the NamedTuple back as a dict
    as_dicts = {
        "opt_state": (
            {
                "count": state["opt_state"][0].count,
                "mu": {"w": np.zeros(3, np.float32)},
                "nu": {"w": np.zeros(3, np.float32)},
            },
            None,
        )
    }
    verify(as_dicts, checksums(state), "here")
    as_dicts["opt_state"][0]["mu"]["w"][0] = 1.0
    with pytest.raises(CheckpointError, match=r"array \['opt_state'\]\[0\]\['mu'\]\['w'\]"):
        verify(as_dicts, checksums(state), "here")
