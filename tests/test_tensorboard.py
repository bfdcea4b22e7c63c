"""--tensorboard: the event files read back as TensorBoard reads them, resumes without duplicated epochs, and
training numbers that do not depend on the flag."""

import json
import os
import shutil
import struct
import subprocess
import sys

import killpoints
import numpy as np
import pytest

from rnn_jax import train
from rnn_jax.files import read_metrics

pytest.importorskip("tensorboardX")
from tensorboardX.proto.event_pb2 import Event, SessionLog  # noqa: E402
from tensorboardX.record_writer import masked_crc32c  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARGS = [
    "--exp",
    "tiny",
    "--max-tokens",
    "600",
    "--epochs",
    "4",
    "--val-fraction",
    "0.1",
    "--eval-every",
    "2",
    "--checkpoint-every",
    "2",
    "--predict-every",
    "1",
    "--quiet",
]
TIMING = ("tokens_per_sec", "seconds")


def records(path):
    """The events of one file, from TFRecord framing: length (u64), its masked CRC, the bytes, their masked CRC."""
    data, i, events = path.read_bytes(), 0, []
    while i < len(data):
        header = data[i : i + 8]
        (n,) = struct.unpack("<Q", header)
        (header_crc,) = struct.unpack("<I", data[i + 8 : i + 12])
        body = data[i + 12 : i + 12 + n]
        (body_crc,) = struct.unpack("<I", data[i + 12 + n : i + 16 + n])
        assert header_crc == masked_crc32c(header) and body_crc == masked_crc32c(body), f"{path}: bad CRC at {i}"
        events.append(Event.FromString(body))
        i += 16 + n
    return events


def event_files(run):
    """Every event file of a run, each a list of events, in name order (TensorBoard's), which is the order the
    processes started them."""
    files = [records(p) for p in sorted((run / "tensorboard").glob("events.out.tfevents.*"))]
    assert files == sorted(files, key=lambda events: events[0].wall_time)
    return files


def starts(events):
    return [e.step for e in events if e.HasField("session_log") and e.session_log.status == SessionLog.START]


def as_shown(run):
    """({tag: {epoch: value}}, {tag: {epoch: text}}) as TensorBoard shows them: a session start after the run's
    first drops every point read before it at its step or later; a step shown twice is an error."""
    scalars, texts, started = {}, {}, False
    for events in event_files(run):
        for e in events:
            if starts([e]) and not started:
                started = True
            elif starts([e]):
                for table in (scalars, texts):
                    for tag, points in table.items():
                        table[tag] = {s: v for s, v in points.items() if s < e.step}
            for v in e.summary.value:
                table, value = (
                    (texts, v.tensor.string_val[0].decode())
                    if v.metadata.plugin_data.plugin_name == "text"
                    else (scalars, v.simple_value)
                )
                assert e.step not in table.setdefault(v.tag, {}), f"{v.tag} at step {e.step} twice"
                table[v.tag][e.step] = value
    return scalars, texts


def numbers(run):
    """metrics.jsonl without its timing fields, and params.npz: everything a run computes."""
    rows = [{k: v for k, v in r.items() if k not in TIMING} for r in read_metrics(run)]
    with np.load(run / "params.npz") as f:
        return rows, {k: f[k] for k in f.files}


@pytest.fixture(scope="module")
def plain(tmp_path_factory, data_dir):
    """The run without --tensorboard."""
    run = tmp_path_factory.mktemp("plain") / "run"
    assert train.main([*ARGS, "--run-dir", str(run), "--data-dir", str(data_dir)]) == 0
    return run


@pytest.fixture(scope="module")
def resumed(tmp_path_factory, data_dir):
    """The same run with --tensorboard, killed in epoch 4 (epochs 1-3 written, checkpoint at 2), then resumed."""
    run = tmp_path_factory.mktemp("board") / "run"
    proc = subprocess.run(
        [
            *killpoints.python("mid-epoch:4"),
            "-m",
            "rnn_jax.train",
            *ARGS,
            "--tensorboard",
            "--run-dir",
            str(run),
            "--data-dir",
            str(data_dir),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == -9, proc.stderr
    first = event_files(run)
    assert len(first) == 1 and {e.step for e in first[0] if e.summary.value} == {1, 2, 3}
    assert train.main(["--run-dir", str(run), "--resume", "--tensorboard", "--quiet"]) == 0
    return run


@pytest.mark.slow
def test_every_epoch_once_with_the_metrics_values(resumed):
    scalars, texts = as_shown(resumed)
    rows = read_metrics(resumed)
    for key, tag in [
        ("loss", "loss/train"),
        ("perplexity", "perplexity/train"),
        ("grad_norm", "optim/grad_norm"),
        ("tokens_per_sec", "speed/tokens_per_sec"),
        ("val_perplexity", "perplexity/val"),
        ("val_loss", "loss/val"),
        ("step", "optim/updates"),
    ]:
        want = {r["epoch"]: r[key] for r in rows if key in r}
        assert sorted(scalars[tag]) == sorted(want), tag
        np.testing.assert_allclose(
            [scalars[tag][e] for e in sorted(want)], [want[e] for e in sorted(want)], rtol=1e-6, err_msg=tag
        )
    assert sorted(scalars["perplexity/val"]) == [2, 4]
    assert scalars["optim/lr"] == {1: 1.0, 2: 1.0, 3: 1.0, 4: 1.0}
    assert sorted(texts["predictions/text_summary"]) == [1, 2, 3, 4]
    assert "time traveller" in texts["predictions/text_summary"][4]
    assert sorted(texts["config/text_summary"]) == [1, 3]  # the first process's, and the resumed one's
    assert json.loads(texts["config/text_summary"][3])["hidden"] == 16


@pytest.mark.slow
def test_each_process_starts_a_session_at_its_first_epoch(resumed):
    first, second = event_files(resumed)
    assert starts(first) == [1] and starts(second) == [3]  # the killed process's epoch 3 is dropped, then rewritten
    assert {e.step for e in first if e.summary.value} == {1, 2, 3}
    assert {e.step for e in second if e.summary.value} == {3, 4}


@pytest.mark.slow
def test_the_flag_changes_no_training_number(plain, resumed):
    rows, params = numbers(plain)
    rows_tb, params_tb = numbers(resumed)
    assert rows == rows_tb
    assert params.keys() == params_tb.keys()
    for k in params:
        np.testing.assert_array_equal(params[k], params_tb[k])
    assert not (plain / "tensorboard").exists()


@pytest.mark.slow
def test_a_resume_may_add_the_flag(plain, tmp_path):
    run = shutil.copytree(plain, tmp_path / "run")
    assert train.main(["--run-dir", str(run), "--resume", "--epochs", "5", "--tensorboard", "--quiet"]) == 0
    scalars, _ = as_shown(run)
    assert scalars["loss/train"].keys() == {5}


def test_without_tensorboardx_the_flag_is_one_clear_error(monkeypatch, tmp_path, data_dir, capsys):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # import tensorboardX raises ImportError
    run = tmp_path / "run"
    assert train.main([*ARGS, "--tensorboard", "--run-dir", str(run), "--data-dir", str(data_dir)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "pip install -e '.[tensorboard]'" in err[0]
    assert not run.exists()


@pytest.mark.slow
def test_a_resume_remembers_the_flag_and_says_what_it_changes(plain, tmp_path, data_dir, capsys):
    run = shutil.copytree(plain, tmp_path / "run")
    capsys.readouterr()
    assert train.main(["--run-dir", str(run), "--resume", "--epochs", "5", "--tensorboard", "--quiet"]) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note: ")]
    assert notes == [
        f"note: resuming {run} with epochs 5 (it had 4)",
        f"note: resuming {run} with tensorboard True (it had False)",
    ]
    assert train.main(["--run-dir", str(run), "--resume", "--epochs", "6", "--quiet"]) == 0  # no flag this time
    assert as_shown(run)[0]["loss/train"].keys() == {5, 6}
    err = capsys.readouterr().err
    assert f"note: resuming {run} with epochs 6 (it had 5)" in err and "tensorboard" not in err
    assert json.loads((run / "config.json").read_text())["tensorboard"] is True
    moved = tmp_path / "moved"
    moved.mkdir()
    shutil.copy(data_dir / "timemachine.txt", moved)
    argv = ["--run-dir", str(run), "--resume", "--epochs", "7", "--data-dir", str(moved), "--quiet"]
    assert train.main(argv) == 0  # the corpus moved: said too
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note: ")]
    assert notes == [
        f"note: resuming {run} with its corpus read from {moved / 'timemachine.txt'} (it had "
        f"{(data_dir / 'timemachine.txt').resolve()})",
        f"note: resuming {run} with epochs 7 (it had 6)",
    ]
