"""Fault injection: a run directory never loses or mixes data, and every failure is one clear line.

Real failures where they matter: bytes overwritten in a checkpoint, a file-size limit (RLIMIT_FSIZE), a
second writer, SIGKILL in the middle of a rewrite, SIGINT while compiling, a peer that never joins.
"""

import dataclasses
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time

import jax.numpy as jnp
import numpy as np
import pytest

from rnn_jax import checkpoint, config, evaluate, generate, rundir, train
from rnn_jax import step as step_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--exp", "tiny", "--max-tokens", "600", "--predict-every", "0", "--checkpoint-every", "1", "--quiet"]
# lr 4 without clipping: validation perplexity is lowest at epoch 4 and worse at every later epoch
BEST_AT_4 = [*TINY, "--val-fraction", "0.1", "--eval-every", "1", "--lr", "4", "--clip-norm", "none"]


def child(argv, *, env=None, preexec_fn=None, module="rnn_jax.train", **popen):
    """A CLI in a fresh process (for a real kill, signal or resource limit)."""
    return subprocess.Popen([sys.executable, "-m", module, *argv], cwd=REPO, env={**os.environ, **(env or {})},
                            preexec_fn=preexec_fn, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            **popen)


def one_clear_line(err: str) -> str:
    """The last stderr line, after checking that nothing printed a traceback."""
    assert "Traceback" not in err, err
    return err.strip().splitlines()[-1]


def snapshot(run):
    """Every file of a run directory with its bytes (to show that nothing changed)."""
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()
            and p.name != ".lock"}


@pytest.fixture(scope="module")
def finished(tmp_path_factory, data_dir):
    """A finished 4-epoch run with validation; its best checkpoint is epoch 4."""
    run = tmp_path_factory.mktemp("finished") / "run"
    assert train.main([*BEST_AT_4, "--epochs", "4", "--run-dir", str(run), "--data-dir", str(data_dir)]) == 0
    return run


@pytest.fixture
def run(finished, tmp_path):
    shutil.copytree(finished, tmp_path / "run")
    return tmp_path / "run"


def best_epoch(run):
    return checkpoint.latest_saved_epoch(run / "best")


# ----------------------------------------------------------------------------- data loss and mixing
def test_the_best_checkpoint_survives_every_resume(run):
    assert best_epoch(run) == 4
    for epochs in (5, 6):  # each resume evaluates a worse model first
        assert train.main(["--run-dir", str(run), "--resume", "--epochs", str(epochs), "--quiet"]) == 0
        assert best_epoch(run) == 4
    rows = rundir.read_metrics(run)
    assert min(rows, key=lambda r: r["val_perplexity"])["epoch"] == 4


def test_a_second_writer_is_refused_and_readers_go_on(run, capsys):
    holder = rundir.Lock(run).acquire()
    try:
        before = snapshot(run)
        assert train.main(["--run-dir", str(run), "--resume", "--epochs", "5", "--quiet"]) == 2
        assert f"is in use by pid {os.getpid()}" in capsys.readouterr().err
        assert snapshot(run) == before
        assert evaluate.main(["--run-dir", str(run)]) == 0  # readers never lock
    finally:
        holder.release()


def test_a_kill_in_the_middle_of_a_rewrite_loses_nothing(run, capsys):
    before = (run / "metrics.jsonl").read_text()
    proc = child(["--run-dir", str(run), "--resume", "--epochs", "5", "--quiet"],
                 env={"RNN_JAX_KILL_AT": "mid-rewrite:metrics.jsonl"})
    proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL
    assert (run / "metrics.jsonl").read_text() == before
    # an append cut short loses only its own line, which the resume drops with a note
    (run / "metrics.jsonl").write_text(before + '{"epoch": 5, "step": 2')
    assert train.main(["--run-dir", str(run), "--resume", "--epochs", "5", "--quiet"]) == 0
    assert "dropped a last line cut short" in capsys.readouterr().err
    assert [r["epoch"] for r in rundir.read_metrics(run)] == [1, 2, 3, 4, 5]


def test_a_directory_with_run_files_but_no_config_is_not_reused(run, data_dir, capsys):
    (run / "config.json").unlink()
    before = snapshot(run)
    assert train.main([*TINY, "--run-dir", str(run), "--data-dir", str(data_dir)]) == 2
    assert "no config.json: a damaged run" in capsys.readouterr().err
    assert snapshot(run) == before


def test_a_resume_to_fewer_epochs_changes_nothing(run, capsys):
    before = snapshot(run)
    for epochs in ("2", "4"):
        assert train.main(["--run-dir", str(run), "--resume", "--epochs", epochs, "--quiet"]) == 2
        assert "has already trained to epoch 4" in capsys.readouterr().err
    assert snapshot(run) == before


# ----------------------------------------------------------------------------- silent wrong results
def overwrite(path, offset=None, n=64):
    data = bytearray(path.read_bytes())
    offset = len(data) // 2 if offset is None else offset
    data[offset:offset + n] = bytes((b + 1) % 256 for b in data[offset:offset + n])
    path.write_bytes(bytes(data))


def array_files(step_dir):
    """The data files of a checkpoint, where its arrays' bytes lie (compressed, so which array a byte belongs to
    is not known: every one is hit)."""
    return [p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"]


def test_overwritten_checkpoint_bytes_are_refused_everywhere(run, capsys):
    for step_dir in (run / "checkpoints" / "4", run / "best" / "4"):
        for path in array_files(step_dir):
            overwrite(path)
    before = snapshot(run)
    resume, read = ["--run-dir", str(run), "--resume", "--epochs", "5", "--quiet"], ["--run-dir", str(run)]
    for main, argv, where in ((train.main, resume, "checkpoints"), (generate.main, read, "checkpoints"),
                              (evaluate.main, ["--run-dir", str(run)], "checkpoints"),
                              (evaluate.main, ["--run-dir", str(run), "--best"], "best")):
        assert main(argv) == 2
        line = one_clear_line(capsys.readouterr().err)
        assert str(run / where / "4") in line and ("is damaged" in line or "cannot be restored" in line), line
    with pytest.raises(checkpoint.CheckpointError, match="checkpoints/4 (is damaged|cannot be restored)"):
        checkpoint.load_params(run)
    assert snapshot(run) == before


def test_a_changed_params_npz_is_refused(run, capsys):
    shutil.rmtree(run / "checkpoints")
    with np.load(run / "params.npz") as f:
        params = dict(f)
    params["b_q"][0] += 1
    np.savez(run / "params.npz", **params)
    with pytest.raises(checkpoint.CheckpointError, match="params.npz is damaged: array \\['b_q'\\]"):
        checkpoint.load_params(run)


@pytest.mark.parametrize("flag,value", [("--lr", "inf"), ("--lr", "nan"), ("--dropout", "nan"),
                                        ("--clip-norm", "inf"), ("--seed", "-1"), ("--hidden", str(2**40)),
                                        ("--epochs", "0")])
def test_every_number_is_checked_before_anything_is_written(tmp_path, data_dir, capsys, flag, value):
    assert train.main([*TINY, flag, value, "--run-dir", str(tmp_path / "r"), "--data-dir", str(data_dir)]) == 2
    assert flag[2:].replace("-", "_") in one_clear_line(capsys.readouterr().err)
    assert not (tmp_path / "r").exists()


def test_an_update_that_overflows_the_parameters_is_skipped():
    # loss and gradient are finite, but the updated parameter overflows float32
    cfg = dataclasses.replace(config.EXPERIMENTS["tiny"], lr=1e38, clip_norm=None)
    tx = step_lib.make_optimizer(cfg)
    params = {"w": jnp.array([-3e38, 1.0], jnp.float32)}
    state = step_lib.TrainState(params, tx.init(params), jnp.zeros((), jnp.int32))
    new, metrics = step_lib._apply(tx, state, {"w": jnp.array([1.0, 1.0])}, jnp.float32(1.0))
    assert not bool(metrics["finite"])
    np.testing.assert_array_equal(new.params["w"], params["w"])


def test_evaluate_refuses_another_corpus_for_the_runs_splits(run, tmp_path, data_dir, capsys):
    changed = tmp_path / "timemachine.txt"  # the run's corpus, changed where the run recorded it
    changed.write_text((data_dir / "timemachine.txt").read_text() + "one more line\n")
    saved = json.loads((run / "config.json").read_text())
    saved["data"]["path"] = str(changed)
    (run / "config.json").write_text(json.dumps(saved))
    assert evaluate.main(["--run-dir", str(run)]) == 2
    assert "is not the corpus the run trained on" in one_clear_line(capsys.readouterr().err)


# ----------------------------------------------------------------------------- tracebacks where a message belongs
def test_a_huge_finite_loss_is_divergence(tmp_path, data_dir, capsys):
    assert train.main([*TINY, "--lr", "1e6", "--clip-norm", "none", "--epochs", "3", "--run-dir",
                       str(tmp_path / "r"), "--data-dir", str(data_dir)]) == 3
    assert "diverged at epoch" in one_clear_line(capsys.readouterr().err)


@pytest.mark.parametrize("damage", ["config.json", "vocab.json", "metrics.jsonl"])
def test_damaged_run_files_are_one_line(run, capsys, damage):
    path = run / damage
    if damage == "metrics.jsonl":
        path.unlink()
    else:
        path.write_text(path.read_text()[:20])
    before = snapshot(run)
    calls = [(train.main, ["--run-dir", str(run), "--resume", "--epochs", "5", "--quiet"])]
    if damage != "metrics.jsonl":
        calls += [(generate.main, ["--run-dir", str(run)]), (evaluate.main, ["--run-dir", str(run)])]
    for main, argv in calls:
        assert main(argv) == 2
        assert damage in one_clear_line(capsys.readouterr().err)
    assert snapshot(run) == before


def test_a_run_dir_that_is_or_lies_under_a_file(tmp_path, data_dir, capsys):
    (tmp_path / "f").write_text("")
    for where in (tmp_path / "f", tmp_path / "f" / "run"):
        assert train.main([*TINY, "--run-dir", str(where), "--data-dir", str(data_dir)]) == 2
        assert str(where) in one_clear_line(capsys.readouterr().err)


@pytest.mark.parametrize("argv,message", [
    (["--coordinator", "h:1", "--num-processes", "2", "--process-id", "2"], "--process-id must be in 0 .. 1"),
    (["--coordinator", "h:1", "--num-processes", "2", "--process-id", "-1"], "--process-id must be in 0 .. 1"),
    (["--coordinator", "h:1", "--num-processes", "0", "--process-id", "0"], "--num-processes must be at least 1"),
    (["--coordinator", "nohost", "--num-processes", "2", "--process-id", "0"], "--coordinator must be HOST:PORT"),
    (["--coordinator", "h:1", "--num-processes", "2", "--process-id", "0", "--init-timeout", "nan"],
     "--init-timeout must be"),
])
def test_bad_multi_process_flags(tmp_path, capsys, argv, message):
    assert train.main([*TINY, *argv, "--run-dir", str(tmp_path / "r")]) == 2
    assert message in one_clear_line(capsys.readouterr().err)
    assert not (tmp_path / "r").exists()


def test_a_peer_that_never_joins_is_one_line(tmp_path, data_dir):
    proc = child([*TINY, "--run-dir", str(tmp_path / "r"), "--data-dir", str(data_dir), "--coordinator",
                  "127.0.0.1:1", "--num-processes", "2", "--process-id", "1", "--init-timeout", "1"])
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert "processes did not all join" in one_clear_line(err)
    assert not (tmp_path / "r").exists()


# preexec_fn forks this multithreaded process; the child only sets a limit and execs
FORK_WARNING = pytest.mark.filterwarnings("ignore:os.fork\\(\\) was called")


def limited(size):
    def apply():
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
    return apply


@FORK_WARNING
def test_a_file_size_limit_fails_cleanly_and_keeps_earlier_checkpoints(tmp_path, data_dir, capsys):
    # 6000 bytes: the checkpoints fit, metrics.jsonl outgrows the limit in its 32nd row
    run = tmp_path / "r"
    proc = child([*TINY, "--epochs", "40", "--run-dir", str(run), "--data-dir", str(data_dir)],
                 preexec_fn=limited(6000))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1
    assert one_clear_line(err) == f"error: {run / 'metrics.jsonl'}: File too large; the files written before are intact"
    last = checkpoint.latest_saved_epoch(run / "checkpoints")
    assert last and checkpoint.load_params(run)[1] is not None
    assert train.main(["--run-dir", str(run), "--resume", "--quiet"]) == 0  # the limit lifted
    assert [r["epoch"] for r in rundir.read_metrics(run)] == list(range(1, 41))
    assert "dropped a last line cut short" in capsys.readouterr().err


@FORK_WARNING
def test_a_checkpoint_that_cannot_be_written_is_one_line(tmp_path, data_dir):
    run = tmp_path / "r"
    proc = child([*TINY, "--epochs", "3", "--run-dir", str(run), "--data-dir", str(data_dir)],
                 preexec_fn=limited(2500))  # under the size of one checkpoint's arrays
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    assert one_clear_line(err).startswith(f"error: cannot write checkpoint {run / 'checkpoints' / '1'} (")


def wait_for(path, proc, timeout=120):
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.02)


@pytest.mark.parametrize("signals", [1, 2])
def test_sigint_while_starting_and_compiling_ends_cleanly(tmp_path, data_dir, signals):
    run = tmp_path / "r"
    # a bigger model compiles for a while after config.json is written
    proc = child([*TINY, "--hidden", "256", "--backward", "autodiff", "--epochs", "3", "--run-dir", str(run),
                  "--data-dir", str(data_dir)])
    wait_for(run / "config.json", proc)
    for _ in range(signals):
        proc.send_signal(signal.SIGINT)
        time.sleep(0.2)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    line = one_clear_line(err)
    assert line.startswith("stopped at once" if signals == 2 else "stopped by SIGINT"), err
    if signals == 1:
        # a checkpoint only when an epoch finished since the last one
        done = [r["epoch"] for r in rundir.read_metrics(run)]
        assert checkpoint.latest_saved_epoch(run / "checkpoints") == (done[-1] if done else None)


def test_a_reader_skips_a_checkpoint_rotated_away_while_it_reads(run, monkeypatch):
    real = checkpoint.restore_from
    rotated = []

    def rotate_first(manager, epoch, abstract_state):
        if not rotated:  # a training process removes the newest checkpoint's files under the reader
            rotated.append(epoch)
            shutil.rmtree(run / "checkpoints" / str(epoch))
        return real(manager, epoch, abstract_state)

    monkeypatch.setattr(checkpoint, "restore_from", rotate_first)
    params, meta = checkpoint.load_params(run)
    assert rotated == [4] and json.loads(json.dumps(meta))["checksums"]
