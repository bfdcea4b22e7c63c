"""The command-line shell around the training core: one exit-code enum for every CLI, a resume that reads its
checkpoint once (old checkpoints with fields no longer saved included), one record/stop rule for a single run and
the vmapped sweep, and chained runs that pass a Request, not flags."""

import ast
import dataclasses
import inspect
import json

import numpy as np
import pytest

import experiments.common
from rnn_jax import baselines, checkpoint, data, epochs, evaluate, generate, launch, runner, sweep, train
from rnn_jax import experiments as experiments_lib
from rnn_jax import flags as flags_lib
from rnn_jax import trainer as trainer_lib
from rnn_jax.bench import cli as bench_cli
from rnn_jax.bench import compare
from rnn_jax.exitcodes import Exit

TINY = dataclasses.replace(experiments_lib.EXPERIMENTS["tiny"], max_tokens=600, epochs=2, predict_every=0)


def test_exit_codes_keep_their_values():
    assert {e.name: int(e) for e in Exit} == {"OK": 0, "FAILED": 1, "USAGE": 2, "DIVERGED": 3, "INTERRUPTED": 130}


@pytest.mark.parametrize("module", [train, evaluate, generate, baselines, bench_cli, compare, experiments.common])
def test_every_cli_ends_with_the_enum(module):
    """No literal status in a return or an exit call of a command line's module: each goes through Exit, its
    exceptions through the one mapping of exitcodes.run."""
    tree = ast.parse(inspect.getsource(module))
    literal = lambda n: isinstance(n, ast.Constant) and type(n.value) is int
    bad = [
        n.lineno
        for n in ast.walk(tree)
        if isinstance(n, ast.Return) and n.value is not None and literal(n.value) and _in_main(tree, n)
    ]
    bad += [
        n.lineno
        for n in ast.walk(tree)
        if isinstance(n, ast.Call)
        and getattr(n.func, "attr", "") in ("exit", "_exit")
        and n.args
        and literal(n.args[0])
    ]
    assert not bad, f"{module.__name__}: literal exit status at {bad}"
    assert "exitcodes.run(" in inspect.getsource(module)


def _in_main(tree, node) -> bool:
    return any(
        isinstance(f, ast.FunctionDef) and f.name in ("main", "_run", "entry") and node in ast.walk(f)
        for f in ast.walk(tree)
    )


def test_a_usage_error_is_the_enum(capsys):
    status = train.main(["--init-from-best", "--quiet"])
    assert status is Exit.USAGE and "--init-from-best goes with --init-from" in capsys.readouterr().err
    assert baselines.main(["--split", "2"]) is Exit.USAGE


@pytest.mark.slow
def test_a_resume_restores_and_verifies_its_checkpoint_once(tmp_path, data_dir, monkeypatch):
    run = tmp_path / "r"
    train.run(train.RunRequest(TINY, run, data_dir=str(data_dir), exp="tiny", quiet=True))
    calls = {"restore": 0, "verify": 0}

    def counted(name, fn):
        def wrapper(*a, **k):
            calls[name] += 1
            return fn(*a, **k)

        return wrapper

    monkeypatch.setattr(checkpoint, "restore_from", counted("restore", checkpoint.restore_from))
    monkeypatch.setattr(checkpoint, "verify", counted("verify", checkpoint.verify))
    train.run(
        train.RunRequest(
            dataclasses.replace(TINY, epochs=3), run, data_dir=str(data_dir), exp="tiny", resume=True, quiet=True
        )
    )
    assert calls == {"restore": 1, "verify": 1}


@pytest.mark.slow
def test_checkpoints_hold_only_what_a_resume_reads_and_old_ones_still_resume(tmp_path, data_dir, monkeypatch):
    whole = train.run(
        train.RunRequest(
            dataclasses.replace(TINY, epochs=3), tmp_path / "whole", data_dir=str(data_dir), exp="tiny", quiet=True
        )
    )
    state, _ = checkpoint.restore_newest(tmp_path / "whole" / "checkpoints", None)
    assert set(state) == {"params", "opt_state", "step", "epoch", "skips_in_a_row"}
    # a checkpoint as earlier versions wrote it: also the carried state, a PRNG key and the seed
    tree = trainer_lib.Trainer._checkpoint_tree
    legacy = lambda self, epoch: {
        **tree(self, epoch),
        "h": np.zeros((self.cfg.batch_size, self.cfg.hidden), "f4"),
        "key": np.array([0, self.cfg.seed], "u4"),
        "data_seed": self.cfg.seed,
    }
    with monkeypatch.context() as m:
        m.setattr(trainer_lib.Trainer, "_checkpoint_tree", legacy)
        train.run(train.RunRequest(TINY, tmp_path / "old", data_dir=str(data_dir), exp="tiny", quiet=True))
    assert "h" in checkpoint.restore_newest(tmp_path / "old" / "checkpoints", None)[0]
    resumed = train.run(
        train.RunRequest(
            dataclasses.replace(TINY, epochs=3),
            tmp_path / "old",
            data_dir=str(data_dir),
            exp="tiny",
            resume=True,
            quiet=True,
        )
    )
    assert resumed["perplexity"] == whole["perplexity"]
    with np.load(tmp_path / "whole" / "params.npz") as a, np.load(tmp_path / "old" / "params.npz") as b:
        assert all(np.array_equal(a[k], b[k]) for k in a)


def test_the_rule_stops_and_skips_as_configured():
    bad = {
        "finite": np.array([True, False, False, True]),
        "loss": np.array([1.0, np.nan, np.nan, 2.0]),
        "grad_norm": np.ones(4),
    }
    with pytest.raises(epochs.Diverged, match="epoch 1, step 2") as e:
        epochs.EpochRule(dataclasses.replace(TINY, on_nonfinite="stop")).row(1, bad, 1.0, 1.0)
    assert e.value.row["nonfinite"] and e.value.row["step"] == 2
    rule = epochs.EpochRule(dataclasses.replace(TINY, on_nonfinite="skip", max_skips=2))
    row = rule.row(1, bad, 1.0, 1.0)
    assert row["skipped"] == 2 and row["loss"] == 1.5 and rule.skips_in_a_row == 0 and rule.step == 4
    with pytest.raises(epochs.Diverged, match="more than 1 updates in a row"):
        epochs.EpochRule(dataclasses.replace(TINY, on_nonfinite="skip", max_skips=1)).row(1, bad, 1.0, 1.0)
    huge = {"finite": np.array([True]), "loss": np.array([1e30]), "grad_norm": np.ones(1)}
    with pytest.raises(epochs.Diverged):  # finite, but its exp overflows
        epochs.EpochRule(TINY).row(1, huge, 1.0, 1.0)


@pytest.mark.slow
def test_a_single_run_and_the_vmapped_sweep_share_the_rule(tmp_path, data_dir, monkeypatch):
    rows = []
    row = epochs.EpochRule.row
    monkeypatch.setattr(epochs.EpochRule, "row", lambda self, *a: rows.append(a[0]) or row(self, *a))
    train.run(train.RunRequest(TINY, tmp_path / "r", data_dir=str(data_dir), exp="tiny", quiet=True))
    assert rows == [1, 2]
    tokens, vocab = data.load_corpus(data_dir / "timemachine.txt", TINY.max_tokens)
    sweep.run_vmap(TINY, [0, 1], tokens, vocab)
    assert rows == [1, 2, 1, 1, 2, 2]


@pytest.mark.slow
@pytest.mark.parametrize("max_skips", [5, 100_000])
def test_the_vmapped_sweep_follows_the_skip_flags_of_a_single_run(tmp_path, data_dir, max_skips):
    cfg = dataclasses.replace(
        TINY, activation="relu", clip_norm=None, lr=1e30, on_nonfinite="skip", max_skips=max_skips
    )
    try:
        train.run(train.RunRequest(cfg, tmp_path / "r", data_dir=str(data_dir), exp="tiny", quiet=True))
    except epochs.Diverged:
        assert max_skips == 5
    single = list(map(json.loads, (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()))
    tokens, vocab = data.load_corpus(data_dir / "timemachine.txt", cfg.max_tokens)
    [record] = sweep.run_vmap(cfg, [0], tokens, vocab)
    assert record["diverged_epoch"] == sweep.divergence_epoch(single, len(vocab))
    assert max_skips != 5 or record["diverged_epoch"] == 1 and single[-1]["nonfinite"]
    assert record["curve"] == [r["perplexity"] for r in single if r.get("perplexity") and not r.get("nonfinite")]


def test_a_chain_runs_each_stage_from_the_request(tmp_path, monkeypatch):
    """Each stage resolves from the command's Request with its own experiment, directory and starting point."""
    calls = []
    monkeypatch.setattr(runner, "run", lambda run_req: calls.append(run_req) or {})
    req = launch.Request(exp="book_random", overrides={"epochs": 3, "hidden": 8}, quiet=True)
    runner.run_chain("book_random", req, tmp_path)
    stages = experiments_lib.CHAINS["book_random"]
    assert [c.run_dir for c in calls] == [tmp_path / s for s in stages]
    for run_req, stage in zip(calls, stages, strict=True):
        assert run_req.cfg == flags_lib.with_overrides(stage, {"epochs": 3, "hidden": 8}) and run_req.exp == stage
    assert calls[0].init_from is None and calls[1].init_from == str(tmp_path / stages[0])
    assert "Namespace" not in inspect.getsource(runner) + inspect.getsource(launch)


def test_a_request_carries_the_given_flags_only():
    args = train.build_parser().parse_args(["--exp", "tiny", "--hidden", "8", "--run-dir", "R", "--quiet"])
    req = launch.Request.from_args(args)
    assert req.overrides == {"hidden": 8} and req.run_dir == "R" and req.quiet
    assert launch.resolve(req).cfg == flags_lib.with_overrides("tiny", {"hidden": 8})
