"""The run directory's files: rewrites that are never half-done, a metrics log that survives a crash, one writer
at a time, and removal only under the lock."""

import dataclasses
import json
import os
from pathlib import Path

import pytest

from rnn_jax import checkpoint, config, rundir, sweep
from rnn_jax import experiments as experiments_lib
from rnn_jax.config import ConfigError
from rnn_jax.files import MetricsWriter, read_json, read_metrics, write_atomic, write_json, write_synced
from rnn_jax.lock import Lock, remove_runs

REPO = Path(__file__).resolve().parent.parent


def test_a_failed_rewrite_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "config.json"
    write_json(path, {"a": 1})

    def fail(f):
        f.write(b'{"a": 2')  # half of the new content, then the disk fails
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError) as e:
        write_synced(path, fail)
    assert e.value.filename == str(path)  # the error names the file, not the temporary beside it
    assert json.loads(path.read_text()) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]


def test_a_rewrite_replaces_the_file_whole(tmp_path):
    path = tmp_path / "summary.json"
    path.write_text("old")
    inode = os.stat(path).st_ino
    write_atomic(path, "new ünicode\n")
    assert path.read_text(encoding="utf-8") == "new ünicode\n"
    assert os.stat(path).st_ino != inode  # renamed over the old file, never written in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]


def test_metrics_rows_are_on_disk_as_soon_as_written_and_a_resume_drops_later_ones(tmp_path):
    writer = MetricsWriter(tmp_path)
    for epoch in (1, 2, 3):
        writer.write({"epoch": epoch, "loss": 1.0 / epoch})
        assert [r["epoch"] for r in read_metrics(tmp_path)] == list(range(1, epoch + 1))  # before close
    writer.close()
    MetricsWriter(tmp_path, keep_epochs_upto=2).close()  # resumed from the checkpoint of epoch 2
    assert [r["epoch"] for r in read_metrics(tmp_path)] == [1, 2]


def test_a_torn_last_metrics_line_is_dropped_and_a_damaged_earlier_one_is_an_error(tmp_path, capsys):
    path = tmp_path / "metrics.jsonl"
    assert read_metrics(tmp_path) == []  # no file yet: no rows
    path.write_text('{"epoch": 1}\n{"epoch": 2}\n{"epo')
    assert read_metrics(tmp_path) == [{"epoch": 1}, {"epoch": 2}]
    assert "dropped a last line cut short" in capsys.readouterr().err
    path.write_text('{"epoch": 1}\n{"epo\n{"epoch": 3}\n')
    with pytest.raises(checkpoint.CheckpointError, match="line 2 is damaged"):
        read_metrics(tmp_path)


@pytest.mark.parametrize(
    "content,message", [(None, "is missing"), ('{"a": ', "is damaged"), (b"\xff\xfe", "is damaged")]
)
def test_a_missing_or_damaged_json_file_is_named(tmp_path, content, message):
    path = tmp_path / "vocab.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(checkpoint.CheckpointError, match=message) as e:
        read_json(path, "the vocabulary")
    assert str(path) in str(e.value)


def test_a_second_writer_is_refused_with_the_holders_pid_until_the_first_releases(tmp_path):
    first = Lock(tmp_path).acquire()
    with pytest.raises(ConfigError, match=f"in use by pid {os.getpid()}"):
        Lock(tmp_path).acquire()
    first.release()
    second = Lock(tmp_path).acquire()  # released: the next writer gets it
    second.release()


def test_a_held_run_is_never_removed_and_a_free_one_is(tmp_path):
    root = tmp_path / "sweep"
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        (root / name / "config.json").write_text("{}")
    held = Lock(root / "b").acquire()
    with pytest.raises(ConfigError, match="in use"):
        remove_runs(root)
    assert (root / "a" / "config.json").exists() and (root / "b" / "config.json").exists()  # nothing deleted
    held.release()
    remove_runs(root)
    assert not root.exists()
    remove_runs(root)  # nothing there: nothing to do


def test_a_directory_holds_a_run_once_an_epoch_is_committed(tmp_path):
    assert not rundir.committed(tmp_path)
    (tmp_path / "config.json").write_text("{}")  # a run that failed before its first checkpoint
    assert not rundir.committed(tmp_path)
    (tmp_path / "summary.json").write_text("{}")
    assert rundir.committed(tmp_path)


def test_a_resume_may_change_how_the_recurrence_runs_but_not_what_it_computes(tmp_path):
    saved = {
        "experiment": "seq",
        "config": config.to_dict(experiments_lib.BASE),
        "data": {"sha1": "abc", "path": "corpus.txt"},
    }
    for how in ({"row_chains": 1}, {"row_chains": 4}, {"backward": "autodiff"}, {"devices": 1}):
        rundir.check_resumable(tmp_path, saved, dataclasses.replace(experiments_lib.BASE, **how), "abc", "seq")
    with pytest.raises(ConfigError, match="hidden differs"):
        rundir.check_resumable(tmp_path, saved, dataclasses.replace(experiments_lib.BASE, hidden=256), "abc", "seq")


BF16 = dataclasses.replace(experiments_lib.BASE, matmul_dtype="bfloat16", epochs=4)
SEQ: dict = {"experiment": "seq", "config": config.to_dict(BF16)}  # config.json of a seq run of BF16


def stopped_run(run_dir, saved: dict) -> None:
    """A run directory stopped after epoch 2 of 4: config.json `saved`, a checkpoint folder, two metrics rows."""
    run_dir.mkdir()
    write_json(run_dir / "config.json", {**saved, "data": {"sha1": "abc", "path": "corpus.txt"}})
    (run_dir / "checkpoints").mkdir()
    write_atomic(run_dir / "metrics.jsonl", '{"epoch": 1}\n{"epoch": 2}\n')


@pytest.mark.parametrize(
    "saved,asked,same",
    [
        (SEQ, BF16, True),
        (SEQ, dataclasses.replace(BF16, eval_every=5, epochs=6), True),
        (SEQ, dataclasses.replace(BF16, hidden=256), False),
        # the sweep used to continue these and --resume then refused them:
        (SEQ, dataclasses.replace(BF16, backward="autodiff"), False),
        ({"config": config.to_dict(BF16)}, BF16, False),  # a config.json that names no experiment
        ({**SEQ, "config": {**SEQ["config"], "gone": 1}}, BF16, False),  # another version's
    ],
)
def test_a_sweep_continues_exactly_the_runs_a_resume_accepts(tmp_path, saved, asked, same):
    run_dir = tmp_path / "run"
    stopped_run(run_dir, saved)
    assert (rundir.resume_conflict(run_dir, rundir.saved_config(run_dir), asked, "seq") is None) == same
    assert (sweep.job_state("seq", asked, run_dir) == "shorter") == same
    if same:
        rundir.check_resumable(run_dir, rundir.saved_config(run_dir), asked, "abc", "seq")
    else:
        with pytest.raises(ConfigError, match="cannot resume|belongs to experiment"):
            rundir.check_resumable(run_dir, rundir.saved_config(run_dir), asked, "abc", "seq")


def test_the_checkpoints_doc_lists_the_fields_a_resume_may_change():
    text = (REPO / "docs" / "checkpoints.md").read_text(encoding="utf-8")
    section = text.split("### Fields a resume may change", 1)[1].split("\n#", 1)[0]
    listed = {line[3:].split("`", 1)[0] for line in section.splitlines() if line.startswith("- `")}
    assert listed == rundir.RESUMABLE_FIELDS
