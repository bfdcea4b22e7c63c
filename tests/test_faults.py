"""Fault injection: a run directory never loses or mixes data, and every failure is one clear line.

Real failures where they matter: bytes overwritten in a checkpoint, a file-size limit (RLIMIT_FSIZE), a
second writer, SIGKILL in the middle of a rewrite, SIGINT while compiling, a peer that never joins.
"""

import dataclasses
import fcntl
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time

import jax.numpy as jnp
import killpoints
import numpy as np
import pytest

from rnn_jax import checkpoint, config, evaluate, generate, memory, rundir, runner, train
from rnn_jax import experiments as experiments_lib
from rnn_jax import step as step_lib
from rnn_jax.files import read_metrics
from rnn_jax.lock import Lock, remove_runs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--exp", "tiny", "--max-tokens", "600", "--predict-every", "0", "--checkpoint-every", "1", "--quiet"]
# lr 4 without clipping: validation perplexity is lowest at epoch 4 and worse at every later epoch
BEST_AT_4 = [*TINY, "--val-fraction", "0.1", "--eval-every", "1", "--lr", "4", "--clip-norm", "none"]


def child(argv, *, env=None, kill_at=None, preexec_fn=None, module="rnn_jax.train", **popen):
    """A CLI in a fresh process (for a real kill, signal or resource limit), SIGKILLed at `kill_at` (killpoints)."""
    return subprocess.Popen(
        [*killpoints.python(kill_at), "-m", module, *argv],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        preexec_fn=preexec_fn,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def one_clear_line(err: str) -> str:
    """The last stderr line, after checking that nothing printed a traceback."""
    assert "Traceback" not in err, err
    return err.strip().splitlines()[-1]


def snapshot(run):
    """Every file of a run directory with its bytes (to show that nothing changed)."""
    return {
        str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file() and p.name != ".lock"
    }


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
@pytest.mark.slow
def test_the_best_checkpoint_survives_every_resume(run):
    assert best_epoch(run) == 4
    for epochs in (5, 6):  # each resume evaluates a worse model first
        assert train.main(["--run-dir", str(run), "--resume", "--epochs", str(epochs), "--quiet"]) == 0
        assert best_epoch(run) == 4
    rows = read_metrics(run)
    assert min(rows, key=lambda r: r["val_perplexity"])["epoch"] == 4


@pytest.mark.slow
def test_a_second_writer_is_refused_and_readers_go_on(run, capsys):
    holder = Lock(run).acquire()
    try:
        before = snapshot(run)
        assert train.main(["--run-dir", str(run), "--resume", "--epochs", "5", "--quiet"]) == 2
        assert f"is in use by pid {os.getpid()}" in capsys.readouterr().err
        assert snapshot(run) == before
        assert evaluate.main(["--run-dir", str(run)]) == 0  # readers never lock
    finally:
        holder.release()


@pytest.mark.slow
def test_a_kill_in_the_middle_of_a_rewrite_loses_nothing(run, capsys):
    before = (run / "metrics.jsonl").read_text()
    proc = child(
        ["--run-dir", str(run), "--resume", "--epochs", "5", "--quiet"],
        kill_at="mid-rewrite:metrics.jsonl",
    )
    proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL
    assert (run / "metrics.jsonl").read_text() == before
    # an append cut short loses only its own line, which the resume drops with a note
    (run / "metrics.jsonl").write_text(before + '{"epoch": 5, "step": 2')
    assert train.main(["--run-dir", str(run), "--resume", "--epochs", "5", "--quiet"]) == 0
    assert "dropped a last line cut short" in capsys.readouterr().err
    assert [r["epoch"] for r in read_metrics(run)] == [1, 2, 3, 4, 5]


@pytest.mark.slow
def test_a_directory_with_run_files_but_no_config_is_not_reused(run, data_dir, capsys):
    (run / "config.json").unlink()
    before = snapshot(run)
    assert train.main([*TINY, "--run-dir", str(run), "--data-dir", str(data_dir)]) == 2
    assert "no config.json: a damaged run" in capsys.readouterr().err
    assert snapshot(run) == before


@pytest.mark.slow
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
    data[offset : offset + n] = bytes((b + 1) % 256 for b in data[offset : offset + n])
    path.write_bytes(bytes(data))


def array_files(step_dir):
    """The data files of a checkpoint, where its arrays' bytes lie (compressed, so which array a byte belongs to
    is not known: every one is hit)."""
    return [p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"]


@pytest.mark.slow
def test_overwritten_checkpoint_bytes_are_refused_everywhere(run, capsys):
    for step_dir in (run / "checkpoints" / "4", run / "best" / "4"):
        for path in array_files(step_dir):
            overwrite(path)
    before = snapshot(run)
    resume, read = ["--run-dir", str(run), "--resume", "--epochs", "5", "--quiet"], ["--run-dir", str(run)]
    for main, argv, where in (
        (train.main, resume, "checkpoints"),
        (generate.main, read, "checkpoints"),
        (evaluate.main, ["--run-dir", str(run)], "checkpoints"),
        (evaluate.main, ["--run-dir", str(run), "--best"], "best"),
    ):
        assert main(argv) == 2
        line = one_clear_line(capsys.readouterr().err)
        assert str(run / where / "4") in line and ("is damaged" in line or "cannot be restored" in line), line
    with pytest.raises(checkpoint.CheckpointError, match="checkpoints/4 (is damaged|cannot be restored)"):
        checkpoint.load_params(run)
    assert snapshot(run) == before


@pytest.mark.slow
def test_a_changed_params_npz_is_refused(run, capsys):
    shutil.rmtree(run / "checkpoints")
    with np.load(run / "params.npz") as f:
        params = dict(f)
    params["b_q"][0] += 1
    np.savez(run / "params.npz", **params)
    with pytest.raises(checkpoint.CheckpointError, match="params.npz is damaged: array \\['b_q'\\]"):
        checkpoint.load_params(run)


@pytest.mark.parametrize(
    "flag,value",
    [
        ("--lr", "inf"),
        ("--lr", "nan"),
        ("--dropout", "nan"),
        ("--clip-norm", "inf"),
        ("--seed", "-1"),
        ("--hidden", str(2**40)),
        ("--epochs", "0"),
    ],
)
def test_every_number_is_checked_before_anything_is_written(tmp_path, data_dir, capsys, flag, value):
    assert train.main([*TINY, flag, value, "--run-dir", str(tmp_path / "r"), "--data-dir", str(data_dir)]) == 2
    assert flag[2:].replace("-", "_") in one_clear_line(capsys.readouterr().err)
    assert not (tmp_path / "r").exists()


def test_an_update_that_overflows_the_parameters_is_skipped():
    # loss and gradient are finite, but the updated parameter overflows float32
    cfg = dataclasses.replace(experiments_lib.EXPERIMENTS["tiny"], lr=1e38, clip_norm=None)
    tx = step_lib.make_optimizer(cfg)
    params = {"w": jnp.array([-3e38, 1.0], jnp.float32)}
    state = step_lib.TrainState(params, tx.init(params), jnp.zeros((), jnp.int32))
    new, metrics = step_lib._apply(tx, state, {"w": jnp.array([1.0, 1.0])}, jnp.float32(1.0))
    assert not bool(metrics["finite"])
    np.testing.assert_array_equal(new.params["w"], params["w"])


@pytest.mark.slow
def test_evaluate_refuses_another_corpus_for_the_runs_splits(run, tmp_path, data_dir, capsys):
    changed = tmp_path / "timemachine.txt"  # the run's corpus, changed where the run recorded it
    changed.write_text((data_dir / "timemachine.txt").read_text() + "one more line\n")
    saved = json.loads((run / "config.json").read_text())
    saved["data"]["path"] = str(changed)
    (run / "config.json").write_text(json.dumps(saved))
    assert evaluate.main(["--run-dir", str(run)]) == 2
    assert "is not the corpus the run trained on" in one_clear_line(capsys.readouterr().err)


# ----------------------------------------------------------------------------- tracebacks where a message belongs
@pytest.mark.slow
def test_a_huge_finite_loss_is_divergence(tmp_path, data_dir, capsys):
    assert (
        train.main(
            [
                *TINY,
                "--lr",
                "1e6",
                "--clip-norm",
                "none",
                "--epochs",
                "3",
                "--run-dir",
                str(tmp_path / "r"),
                "--data-dir",
                str(data_dir),
            ]
        )
        == 3
    )
    assert "diverged at epoch" in one_clear_line(capsys.readouterr().err)


@pytest.mark.slow
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


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--coordinator", "h:1", "--num-processes", "2", "--process-id", "2"], "--process-id must be in 0 .. 1"),
        (["--coordinator", "h:1", "--num-processes", "2", "--process-id", "-1"], "--process-id must be in 0 .. 1"),
        (["--coordinator", "h:1", "--num-processes", "0", "--process-id", "0"], "--num-processes must be at least 1"),
        (["--coordinator", "nohost", "--num-processes", "2", "--process-id", "0"], "--coordinator must be HOST:PORT"),
        (
            ["--coordinator", "h:1", "--num-processes", "2", "--process-id", "0", "--init-timeout", "nan"],
            "--init-timeout must be",
        ),
    ],
)
def test_bad_multi_process_flags(tmp_path, capsys, argv, message):
    assert train.main([*TINY, *argv, "--run-dir", str(tmp_path / "r")]) == 2
    assert message in one_clear_line(capsys.readouterr().err)
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_a_peer_that_never_joins_is_one_line(tmp_path, data_dir):
    proc = child(
        [
            *TINY,
            "--run-dir",
            str(tmp_path / "r"),
            "--data-dir",
            str(data_dir),
            "--coordinator",
            "127.0.0.1:1",
            "--num-processes",
            "2",
            "--process-id",
            "1",
            "--init-timeout",
            "1",
        ]
    )
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


@pytest.mark.slow
@FORK_WARNING
def test_a_file_size_limit_fails_cleanly_and_keeps_earlier_checkpoints(tmp_path, data_dir, capsys):
    # 6000 bytes: the checkpoints fit, metrics.jsonl outgrows the limit in its 32nd row
    run = tmp_path / "r"
    proc = child(
        [*TINY, "--epochs", "40", "--run-dir", str(run), "--data-dir", str(data_dir)], preexec_fn=limited(6000)
    )
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1
    assert one_clear_line(err) == f"error: {run / 'metrics.jsonl'}: File too large; the files written before are intact"
    last = checkpoint.latest_saved_epoch(run / "checkpoints")
    assert last and checkpoint.load_params(run)[1] is not None
    assert train.main(["--run-dir", str(run), "--resume", "--quiet"]) == 0  # the limit lifted
    assert [r["epoch"] for r in read_metrics(run)] == list(range(1, 41))
    assert "dropped a last line cut short" in capsys.readouterr().err


@pytest.mark.slow
@FORK_WARNING
def test_a_checkpoint_that_cannot_be_written_is_one_line(tmp_path, data_dir):
    run = tmp_path / "r"
    proc = child(
        [*TINY, "--epochs", "3", "--run-dir", str(run), "--data-dir", str(data_dir)], preexec_fn=limited(2500)
    )  # under the size of one checkpoint's arrays
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    assert one_clear_line(err).startswith(f"error: cannot write checkpoint {run / 'checkpoints' / '1'} (")


def wait_for(path, proc, timeout=120):
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.02)


@pytest.mark.slow
@pytest.mark.parametrize("signals", [1, 2])
def test_sigint_while_starting_and_compiling_ends_cleanly(tmp_path, data_dir, signals):
    run = tmp_path / "r"
    # a bigger model compiles for a while after config.json is written
    proc = child(
        [
            *TINY,
            "--hidden",
            "256",
            "--backward",
            "autodiff",
            "--epochs",
            "3",
            "--run-dir",
            str(run),
            "--data-dir",
            str(data_dir),
        ]
    )
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
        done = [r["epoch"] for r in read_metrics(run)]
        assert checkpoint.latest_saved_epoch(run / "checkpoints") == (done[-1] if done else None)


@pytest.mark.slow
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


# ----------------------------------------------------------------------------- an epoch commits as a whole
@pytest.mark.slow
def test_a_kill_between_the_checkpoint_and_best_is_completed_on_resume(tmp_path, data_dir):
    run = tmp_path / "r"
    argv = [*BEST_AT_4, "--epochs", "6", "--run-dir", str(run), "--data-dir", str(data_dir)]
    proc = child(argv, kill_at="before-best:4")  # checkpoints/4 written, best/4 not
    proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL
    assert checkpoint.latest_saved_epoch(run / "checkpoints") == 4 and best_epoch(run) == 3
    stale = run / "best" / "5.orbax-checkpoint-tmp-1234567"  # a best/ write cut short
    stale.mkdir()
    (stale / "part").write_text("x")
    assert train.main(["--run-dir", str(run), "--resume", "--epochs", "6", "--quiet"]) == 0
    rows = read_metrics(run)
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert best_epoch(run) == min(rows, key=lambda r: r["val_perplexity"])["epoch"] == 4
    assert not stale.exists()
    assert evaluate.main(["--run-dir", str(run), "--best"]) == 0


@pytest.mark.slow
def test_a_run_that_died_before_its_first_checkpoint_does_not_block_the_same_command(tmp_path, data_dir):
    run = tmp_path / "r"
    argv = [*TINY, "--epochs", "2", "--run-dir", str(run), "--data-dir", str(data_dir)]
    proc = child(argv, kill_at="mid-epoch:1")
    proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL and (run / "config.json").is_file()
    assert not rundir.committed(run)
    assert train.main(argv) == 0  # the same command, not --resume
    assert [r["epoch"] for r in read_metrics(run)] == [1, 2]


@pytest.mark.slow
def test_nothing_removes_a_run_directory_another_process_holds(run):
    holder = Lock(run).acquire()
    try:
        before = snapshot(run)
        with pytest.raises(config.ConfigError, match=f"is in use by pid {os.getpid()}"):
            remove_runs(run.parent)
        assert snapshot(run) == before
    finally:
        holder.release()
    remove_runs(run.parent)  # free: removed
    assert not run.parent.exists()


@pytest.mark.slow
def test_a_lock_taken_on_a_removed_file_is_taken_again_on_the_path(run, monkeypatch):
    real_flock, removed = fcntl.flock, []

    def flock_then_replace(f, op):  # the lock file is removed and recreated while this process waits for it
        real_flock(f, op)
        if not removed:
            removed.append(True)
            (run / ".lock").unlink()
            (run / ".lock").write_text("")

    monkeypatch.setattr(fcntl, "flock", flock_then_replace)
    lock = Lock(run).acquire()
    try:
        assert os.fstat(lock.f.fileno()).st_ino == os.stat(run / ".lock").st_ino
    finally:
        lock.release()


@pytest.mark.slow
def test_init_from_resumed_before_its_first_checkpoint_starts_from_the_recorded_parameters(tmp_path, data_dir, capsys):
    source, target, reference = tmp_path / "src", tmp_path / "ft", tmp_path / "ref"
    base = [*TINY, "--data-dir", str(data_dir)]
    assert train.main([*base, "--epochs", "2", "--run-dir", str(source)]) == 0
    shutil.copytree(source, tmp_path / "src_at_2")
    proc = child(
        [*base, "--epochs", "2", "--init-from", str(source), "--run-dir", str(target)],
        kill_at="mid-epoch:1",
    )
    proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL
    record = json.loads((target / "config.json").read_text())["init_from"]
    assert record["epoch"] == 2 and record["checksums"]
    assert train.main(["--run-dir", str(source), "--resume", "--epochs", "3", "--quiet"]) == 0  # the source goes on
    kept = tmp_path / "kept_2"
    shutil.move(source / "checkpoints" / "2", kept)
    assert train.main(["--run-dir", str(target), "--resume", "--quiet"]) == 2  # epoch 2 is gone: refused
    assert "no longer holds" in one_clear_line(capsys.readouterr().err)
    assert checkpoint.latest_saved_epoch(target / "checkpoints") is None
    shutil.move(kept, source / "checkpoints" / "2")
    assert train.main(["--run-dir", str(target), "--resume", "--quiet"]) == 0  # from epoch 2, not epoch 3
    assert (
        train.main([*base, "--epochs", "2", "--init-from", str(tmp_path / "src_at_2"), "--run-dir", str(reference)])
        == 0
    )
    with np.load(target / "params.npz") as got, np.load(reference / "params.npz") as want:
        for name in want:
            np.testing.assert_array_equal(got[name], want[name], err_msg=name)


# ----------------------------------------------------------------------------- exit 0 means the result asked for
@pytest.mark.slow
def test_sighup_stops_a_run_after_its_epoch_like_sigterm(tmp_path, data_dir):
    run = tmp_path / "r"
    proc = child(
        [*TINY, "--epochs", "100000", "--checkpoint-every", "0", "--run-dir", str(run), "--data-dir", str(data_dir)]
    )
    wait_for(run / "metrics.jsonl", proc)
    while not (run / "metrics.jsonl").read_text().strip():
        assert proc.poll() is None
        time.sleep(0.02)
    proc.send_signal(signal.SIGHUP)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    line = one_clear_line(err)
    assert line.startswith("stopped by SIGHUP after epoch") and f"--run-dir {run} --resume" in line
    assert checkpoint.latest_saved_epoch(run / "checkpoints") == read_metrics(run)[-1]["epoch"]


@pytest.mark.slow
def test_a_finished_chain_stage_refuses_other_flags_with_the_difference(tmp_path, data_dir, capsys):
    argv = [
        "--exp",
        "book_random",
        "--hidden",
        "16",
        "--batch-size",
        "2",
        "--num-steps",
        "6",
        "--max-tokens",
        "600",
        "--epochs",
        "1",
        "--run-dir",
        str(tmp_path / "chain"),
        "--data-dir",
        str(data_dir),
        "--quiet",
    ]
    assert train.main(argv) == 0
    before = snapshot(tmp_path / "chain")
    for flag, value, field in (("--hidden", "8", "hidden"), ("--lr", "2", "lr"), ("--epochs", "2", "epochs")):
        assert train.main([*argv, flag, value]) == 2
        line = one_clear_line(capsys.readouterr().err)
        assert f"stage seq of {tmp_path / 'chain'} has finished with {field}" in line, line
    assert snapshot(tmp_path / "chain") == before
    assert train.main(argv) == 0  # the same flags: nothing to do


@pytest.mark.slow
def test_an_empty_predict_prefix_is_refused_up_front_and_an_old_one_does_not_break_a_resume(tmp_path, data_dir, capsys):
    run = tmp_path / "r"
    argv = [*TINY, "--epochs", "1", "--run-dir", str(run), "--data-dir", str(data_dir)]
    assert train.main([*argv, "--predict-prefix", ""]) == 2
    assert "--predict-prefix must be non-empty" in one_clear_line(capsys.readouterr().err)
    assert not run.exists()
    assert train.main(argv) == 0
    saved = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**saved, "predict_prefixes": [""]}))  # recorded by an older run
    assert train.main(["--run-dir", str(run), "--resume", "--epochs", "2", "--quiet"]) == 0
    assert list(json.loads((run / "summary.json").read_text())["predictions"]) == list(train.PREFIXES)


def test_a_model_beyond_memory_is_refused_before_the_run_directory(tmp_path, data_dir, capsys, monkeypatch):
    assert (
        train.main([*TINY, "--hidden", "2000000", "--run-dir", str(tmp_path / "r"), "--data-dir", str(data_dir)]) == 2
    )
    line = one_clear_line(capsys.readouterr().err)
    assert line.startswith("error: --hidden 2000000") and "needs about" in line and "GiB" in line
    assert not (tmp_path / "r").exists()
    need, n_params = train.memory_estimate(experiments_lib.EXPERIMENTS["tiny"], 28)
    assert n_params == 16 * 16 + 2 * 16 * 28 + 16 + 28 and need > 4 * 2 * n_params  # parameters, gradients, ...
    monkeypatch.setattr(runner, "available_memory", lambda: need - 1)
    assert train.main([*TINY, "--run-dir", str(tmp_path / "r"), "--data-dir", str(data_dir)]) == 2
    assert "needs about" in one_clear_line(capsys.readouterr().err) and not (tmp_path / "r").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    "lr,code,message",
    [
        ("1e39", 2, "float32's range"),
        ("3.5e38", 2, "float32's range"),
        ("3e38", 3, "no finite perplexity"),
        ("1e30", 3, "no finite perplexity"),
    ],
)
def test_dynamic_evaluation_is_checked_against_float32_and_a_nonfinite_result_is_an_error(
    run, capsys, lr, code, message
):
    assert evaluate.main(["--run-dir", str(run), "--dynamic", "--dynamic-lr", lr]) == code
    out, err = capsys.readouterr()
    assert message in one_clear_line(err) and "nan" not in out.lower()


@pytest.mark.slow
def test_generates_memory_guard_counts_the_prompt(run, tmp_path, capsys):
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("the time machine " * 6000)  # about 100,000 characters
    assert (
        generate.main(
            ["--run-dir", str(run), "--prefix-file", str(prompt), "--num-samples", "2000", "--num-chars", "10"]
        )
        == 2
    )
    line = one_clear_line(capsys.readouterr().err)
    assert "102,000-character prompt" in line and "GiB" in line
    assert generate.memory_bytes(2000, 10, 16, 28, prompt_chars=100_000) > 12 * 2**30
    assert generate.memory_bytes(2000, 10, 16, 28) < 2**20  # without the prompt: under a MiB


@pytest.mark.parametrize("case", ["missing peer", "failing peer", "no corpus", "unwritable json-out"])
def test_bench_checks_its_peer_corpus_and_output_before_measuring(tmp_path, data_dir, capsys, case):
    from rnn_jax import bench

    failing = tmp_path / "python"
    failing.write_text("#!/bin/sh\necho 'ModuleNotFoundError: no torch here' >&2\nexit 1\n")
    failing.chmod(0o755)
    argv = {
        "missing peer": ["--peer-python", str(tmp_path / "nowhere" / "python")],
        "failing peer": ["--peer-python", str(failing)],
        "no corpus": ["--data-dir", str(tmp_path / "nowhere")],
        "unwritable json-out": ["--json-out", str(tmp_path / "nowhere" / "bench.json")],
    }[case]
    source = [] if case == "no corpus" else ["--data-dir", str(data_dir)]
    t0 = time.perf_counter()
    assert bench.main(["--quick", "--sections", "throughput", "--hidden", "8", *source, *argv]) == 2
    out, err = capsys.readouterr()
    line = one_clear_line(err)
    assert line.startswith("error: ") and "[throughput" not in err and time.perf_counter() - t0 < 30
    assert {
        "missing peer": "no such executable",
        "failing peer": "cannot import torch (ModuleNotFoundError",
        "no corpus": str(tmp_path / "nowhere"),
        "unwritable json-out": "--json-out",
    }[case] in line


@pytest.mark.slow
def test_sigint_while_importing_is_one_line(tmp_path, data_dir):
    proc = child([*TINY, "--run-dir", str(tmp_path / "r"), "--data-dir", str(data_dir)])
    time.sleep(0.3)  # inside the imports (jax, orbax), before main()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err
    assert len(err.strip().splitlines()) <= 1 and not (tmp_path / "r").exists()


@pytest.mark.slow
def test_input_files_that_cannot_be_loaded_are_refused_before_reading(run, tmp_path, data_dir, capsys):
    huge = tmp_path / "huge.txt"
    with open(huge, "wb") as f:  # sparse: its size, not its bytes, is what is checked
        f.truncate(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    assert train.main([*TINY, "--corpus", str(huge), "--run-dir", str(tmp_path / "r")]) == 2
    assert "too large to load within the" in one_clear_line(capsys.readouterr().err)
    assert not (tmp_path / "r").exists()
    for path, message in ((huge, "a prompt that long cannot be warmed up on"), ("/dev/zero", "not a regular file")):
        assert generate.main(["--run-dir", str(run), "--prefix-file", str(path)]) == 2
        assert message in one_clear_line(capsys.readouterr().err)


@pytest.mark.parametrize(
    "files,limit",
    [
        ({"memory.max": "67108864\n"}, 64 * 2**20),  # cgroup v2
        ({"memory/memory.limit_in_bytes": "67108864\n"}, 64 * 2**20),  # cgroup v1
        ({"memory.max": "max\n", "memory/memory.limit_in_bytes": "9223372036854771712\n"}, None),  # no limit
    ],
)
def test_the_memory_budget_is_the_smallest_limit_the_cgroup_included(
    tmp_path, data_dir, capsys, monkeypatch, files, limit
):
    for name, text in files.items():
        (tmp_path / "cg" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "cg" / name).write_text(text)
    monkeypatch.setattr(memory, "CGROUP_ROOT", tmp_path / "cg")
    assert memory.cgroup_memory_limit() == limit
    if limit is None:
        assert memory.memory_budget()[1] == "available physical memory"
        return
    assert memory.memory_budget() == (limit, "the cgroup's memory limit")
    argv = [*TINY, "--hidden", "4096", "--run-dir", str(tmp_path / "r"), "--data-dir", str(data_dir)]
    assert train.main(argv) == 2  # about 0.3 GiB: fits the machine, not the cgroup
    line = one_clear_line(capsys.readouterr().err)
    assert "more than the 0.1 GiB of the cgroup's memory limit here" in line and not (tmp_path / "r").exists()


BUDGET = (
    "import sys; from rnn_jax import corpora, memory; print(memory.memory_budget()); corpora.read_text(sys.argv[1])"
)


@FORK_WARNING
def test_the_address_space_limit_bounds_what_is_loaded(tmp_path):
    corpus = tmp_path / "big.txt"
    with open(corpus, "wb") as f:  # sparse, 256 MiB: 4 GiB to load, within this machine's memory
        f.truncate(256 * 2**20)
    limit = 3 * 2**30

    def limited():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    proc = subprocess.run(
        [sys.executable, "-c", BUDGET, str(corpus)], cwd=REPO, preexec_fn=limited, capture_output=True, text=True
    )
    assert f"({limit}, 'the address-space limit (ulimit -v)')" in proc.stdout
    assert "too large to load within the 3.0 GiB of the address-space limit (ulimit -v)" in proc.stderr


def test_a_stack_too_deep_to_compile_is_refused_with_the_bound(tmp_path, data_dir, capsys):
    argv = [*TINY, "--num-layers", "4000", "--run-dir", str(tmp_path / "r"), "--data-dir", str(data_dir)]
    assert train.main(argv) == 2
    line = one_clear_line(capsys.readouterr().err)
    assert f"num_layers must be in [1, {config.MAX_LAYERS}], got 4000" in line and not (tmp_path / "r").exists()


def special_files(tmp_path):
    """A directory, a FIFO (reading it would block forever) and /dev/zero (it never ends)."""
    fifo = tmp_path / "fifo"
    if not fifo.exists():
        os.mkfifo(fifo)
    return [(tmp_path, "a directory"), (fifo, "a FIFO"), ("/dev/zero", "a character device")]


@pytest.mark.slow
def test_a_corpus_that_is_not_a_regular_file_is_refused_without_reading(run, tmp_path, data_dir, capsys):
    for path, kind in special_files(tmp_path):
        assert train.main([*TINY, "--corpus", str(path), "--run-dir", str(tmp_path / "r")]) == 2
        assert f"--corpus {path} is {kind}, not a regular file" in one_clear_line(capsys.readouterr().err)
        assert evaluate.main(["--run-dir", str(run), "--corpus", str(path)]) == 2
        assert f"is {kind}, not a regular file" in one_clear_line(capsys.readouterr().err)
    (tmp_path / "data").mkdir()  # a data directory whose book is a FIFO
    os.mkfifo(tmp_path / "data" / "timemachine.txt")
    argv = [*TINY, "--data-dir", str(tmp_path / "data"), "--run-dir", str(tmp_path / "r")]
    assert train.main(argv) == 2 and "is a FIFO" in one_clear_line(capsys.readouterr().err)
    assert not (tmp_path / "r").exists()


GOOD_REPORT = {"throughput": {"rows": [{"name": "fused", "ratio_to_torch_scratch": 1.5}]}}


@pytest.mark.parametrize(
    "bad,message",
    [
        ([], "a JSON list, not a benchmark report"),
        ({"throughput": []}, "throughput is not an object"),
        ({"throughput": {"rows": [{"ratio_to_torch_scratch": 1}]}}, "not a list of objects with a name"),
        ({"throughput": {"rows": [{"name": "f", "tokens_per_s": {"median": "fast"}}]}}, "is 'fast', not a number"),
        ({"throughput": {"rows": [], "limit": {"gflop_per_s": 3}}}, "limit.gflop_per_s.median is not a number"),
        ({"environment": {"cache": [1]}, "throughput": {"rows": []}}, "environment.cache is not an object"),
    ],
)
def test_compare_says_in_one_line_which_report_is_wrong(tmp_path, capsys, bad, message):
    from rnn_jax.bench import compare

    good, wrong = tmp_path / "good.json", tmp_path / "wrong.json"
    good.write_text(json.dumps(GOOD_REPORT))
    wrong.write_text(json.dumps(bad))
    assert compare.main([str(good), str(good)]) == 0
    capsys.readouterr()
    assert compare.main([str(good), str(wrong)]) == 2
    line = one_clear_line(capsys.readouterr().err)
    assert line.startswith(f"error: {wrong}") and message in line


def test_compare_refuses_what_is_not_a_regular_file(tmp_path, capsys):
    from rnn_jax.bench import compare

    for path, kind in special_files(tmp_path):
        assert compare.main([str(path)]) == 2
        assert one_clear_line(capsys.readouterr().err) == (
            f"error: benchmark report {path} is {kind}, not a regular file; pass a regular file"
        )


@pytest.mark.slow
@pytest.mark.parametrize(
    "name,main,message",
    [
        ("config.json", "evaluate", "is not a run directory"),
        ("metrics.jsonl", "train", "metrics.jsonl is missing"),
    ],
)
def test_run_files_that_are_not_regular_files_are_refused_without_reading(run, capsys, name, main, message):
    (run / name).unlink()
    os.mkfifo(run / name)  # reading it would block forever
    argv = ["--run-dir", str(run)] + (["--resume", "--epochs", "5", "--quiet"] if main == "train" else [])
    assert {"train": train, "evaluate": evaluate}[main].main(argv) == 2
    assert message in one_clear_line(capsys.readouterr().err)
