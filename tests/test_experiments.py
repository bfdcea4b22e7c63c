"""The experiment registry, the experiment scripts' plumbing and the report generator (no long training)."""

import dataclasses
import json
import os
import subprocess
from pathlib import Path

import jax
import numpy as np
import pytest

from experiments import common, records, report
from experiments.sections import readme
from experiments.sections.heldout import heldout_section
from rnn_jax import config, sweep
from rnn_jax import experiments as experiments_lib
from rnn_jax import step as step_lib


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(experiments_lib.EXPERIMENTS))
def test_every_experiment_trains_a_few_steps(name):
    # the registered configuration, shrunk only in size, so each one's code path runs for real
    cfg = dataclasses.replace(experiments_lib.EXPERIMENTS[name], hidden=16, batch_size=4, num_steps=5)
    tx = step_lib.make_optimizer(cfg)
    X = np.random.default_rng(0).integers(1, 28, (3, 4, 5), dtype=np.int32)
    state, h, metrics = step_lib.make_train_epoch(cfg, tx)(step_lib.init_state(cfg, 28, tx), X, np.roll(X, -1, -1))
    assert metrics["loss"].shape == (3,) and np.all(np.isfinite(metrics["loss"])), name
    assert int(state.step) == 3 and all(leaf.shape == (4, 16) for leaf in jax.tree.leaves(h))  # a pytree state


@pytest.fixture
def results_dir(tmp_path, monkeypatch):
    for module, attr, value in (
        (common, "RESULTS", tmp_path / "results"),
        (common, "RUNS", tmp_path / "runs"),
        (common, "HERE", tmp_path),
        (report, "README", tmp_path / "README.md"),
    ):
        monkeypatch.setattr(module, attr, value)
    return tmp_path


@pytest.mark.slow
def test_run_seeds_writes_a_record_per_seed(results_dir, data_dir):
    args = common.parser("t").parse_args(
        ["--seeds", "2", "--mode", "vmap", "--epochs", "2", "--data-dir", str(data_dir)]
    )
    cfg = dataclasses.replace(experiments_lib.EXPERIMENTS["tiny"], max_tokens=600)
    rec = common.run_seeds("tiny", "tiny", cfg, args)
    saved = json.loads((results_dir / "results" / "smoke" / "tiny.json").read_text())  # --epochs: a smoke run
    assert saved == json.loads(json.dumps(rec))
    assert [s["seed"] for s in saved["seeds"]] == [0, 1] and saved["mode"] == "vmap"
    assert saved["config"]["val_fraction"] == 0.1 and len(saved["seeds"][0]["val_curve"]) == 1
    assert saved["summary"]["perplexity"]["n"] == 2


def fake(name, finals, *, diverged=(), epochs=500, tps=50_000.0):
    seeds = []
    for i, final in enumerate(finals):
        curve = list(np.geomspace(20, final, epochs))
        bad = i in diverged
        seeds.append(
            {
                "seed": i,
                "diverged_epoch": 7 if bad else None,
                "perplexity": None if bad else final,
                "val_perplexity": None if bad else 3 * final,
                "tokens_per_sec": tps,
                "wall_seconds": 1.0,
                "curve": curve[:6] if bad else curve,
                "val_curve": [[e, 3 * final + abs(e - 100) / 100] for e in range(25, epochs + 1, 25)],
                "predictions": None,
            }
        )
    from rnn_jax import sweep

    common.write(name, {"name": name, "config": {"epochs": epochs}, "summary": sweep.summarize(seeds), "seeds": seeds})


def test_report_tables_figures_and_answers(results_dir):
    fake("seq", [1.0, 1.1, 1.2])
    fake("random", [1.5, 1.6, 1.7])
    fake("relu", [1.1, 1.1, 1.1])
    fake("relu_noclip", [2.0, 2.0, 9.0], diverged=(0, 1))
    fake("nodetach", [3.0, 3.0, 3.0], epochs=100, tps=6_000.0)
    fake("hp_base", [1.0, 1.0, 1.0])
    fake("hp_hidden_64", [2.0, 2.0, 2.0])
    fake("book_random", [1.3, 1.4, 1.5])
    report.main()
    md = (results_dir / "RESULTS.md").read_text()
    assert "| `seq` | 500 | 1.100 ± 0.100 |" in md
    assert "| `relu_noclip` | 500 | 9.000 ± 0.000 |" in md and "(0, 7), (1, 7)" in md  # diverged: listed, not averaged
    assert "2 of 3 seeds diverged (at epochs 7, 7)" in md
    assert "costs 8.3x the time per epoch" in md
    assert "`hp_base`" in md and md.index("`hp_base`") < md.index("`hp_hidden_64`")  # ranked by held-out
    assert "| `book_random` | 500 | 1.400 ± 0.100 |" in md and "It ends at 1.400 ± 0.100, against 1.600" in md
    for fig in ("seq_random", "relu", "nodetach", "book_random"):
        assert (results_dir / "results" / "figures" / f"{fig}.png").stat().st_size > 5_000
    assert "## Learned embeddings" not in md  # no record, no section


def test_report_writes_the_readme_results_between_its_markers_only(results_dir):
    fake("seq", [1.0, 1.1, 1.2])
    fake("gru", [1.0, 1.0, 1.0])
    path = results_dir / "README.md"
    path.write_text(f"# title\n\n{readme.README_START}\nold table\n{readme.README_END}\n\n## after\n")
    report.main()
    text = path.read_text()
    assert text.startswith(f"# title\n\n{readme.README_START}\n")
    assert text.endswith(f"{readme.README_END}\n\n## after\n")
    assert "old table" not in text
    assert "| `seq` | 8.5, sequential partitioning | 1.100 ± 0.100 | 1.0 |" in text and "| `gru` |" in text
    assert (
        "| `seq` | training perplexity 1.100 ± 0.100 after 500 epochs (3 seeds)"
        in (results_dir / "RESULTS.md").read_text()
    )  # the one-line summary opens RESULTS.md
    path.write_text("no markers\n")
    assert not readme.write_readme_results(path) and path.read_text() == "no markers\n"


def test_the_readme_results_are_those_of_the_records():
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = text.split(readme.README_START, 1)[1].split(readme.README_END, 1)[0]
    assert block == "\n" + "\n".join(readme.readme_results()) + "\n", "README results are stale: run make report"


def test_report_beating_counting_section(results_dir):
    from experiments.counting import stat

    ngram = lambda n, val, test: {
        "kind": "ngram",
        "evaluation": "static",
        "test_perplexity": stat([test]),
        "test_bits_per_char": stat([np.log2(test)]),
        "val_perplexity": stat([val]),
        "config": {"n": n, "discount": 0.9},
    }
    rnn = lambda ev, vals, tests: {
        "kind": "rnn",
        "evaluation": ev,
        "test_perplexity": stat(tests),
        "test_bits_per_char": stat(np.log2(tests)),
        "val_perplexity": stat(vals),
        "config": {},
        "regulariser": "none",
        "best_epoch": stat([3, 4]),
        "val_curves": [[6.0, 5.0, 4.5, 4.6], [6.1, 5.1, 4.4, 4.5]],
        **({"dynamic": {"rule": "sgd", "lr": 0.01, "segment": 20}} if ev == "dynamic" else {}),
    }
    models = {
        "5-gram KN": ngram(5, 4.3, 4.4),
        "7-gram KN": ngram(7, 4.1, 4.2),  # the 7-gram wins on validation
        "rnn-tanh-1x512": rnn("static", [4.5, 4.4], [4.6, 4.5]),
        "rnn-tanh-1x512 dynamic": rnn("dynamic", [4.1, 4.0], [4.2, 4.1]),
    }
    common.write(
        "heldout",
        {
            "name": "heldout",
            "split_tokens": {"train": 8, "val": 1, "test": 1},
            "screening": {
                "rnn-tanh-1x512 none": {
                    "best_val_perplexity": 4.4,
                    "val_curve": [5.0, 4.4, 4.6],
                    "config": {"epochs": 3, "optimizer": "adam", "lr": 0.002, "lr_schedule": "cosine"},
                }
            },
            "models": models,
        },
    )
    md = "\n".join(heldout_section())
    rows = [line for line in md.splitlines() if line.startswith("| ") and "KN" in line or "rnn-" in line]
    assert rows[0].startswith("| rnn-tanh-1x512 dynamic | dynamic | 4.150 ± 0.071 |")  # sorted by test perplexity
    assert "| 7-gram KN | static | 4.200 |" in md
    assert "is the 7-gram KN (order 7, discount 0.9): test perplexity 4.200" in md
    assert "rnn-tanh-1x512, test 4.550 ± 0.071, 1.083x the 7-gram KN." in md
    # no adaptive counting model recorded: the dynamic RNN is measured against the static one
    assert "rnn-tanh-1x512 dynamic, test 4.150 ± 0.071, 0.988x the 7-gram KN" in md
    assert "regularised, dynamic: 4.150 against the static 4.200 (at or below the best static counting model)" in md
    assert "Test-part scorings recorded in `results/test_log.jsonl`: 0." in md
    assert "| rnn-tanh-1x512 none | 3 | adam 0.002, cosine | 4.400 | 2 |" in md
    assert (results_dir / "results" / "figures" / "heldout.png").stat().st_size > 5_000


def test_the_heldout_table_ranks_the_residual_recurrences_and_sets_the_best_beside_the_best_plain_stack():
    from experiments.sections.heldout import residual_race

    def rnn(cell, block, test, val, **extra):
        stat = lambda x: {"mean": x, "std": 0.01, "seeds": [x - 0.01, x + 0.01]}
        cfg = {"cell": cell, "block": block, "num_layers": 3 if block == "residual" else 1}
        return {"kind": "rnn", "evaluation": "static", "config": cfg, "test_perplexity": stat(test)} | {
            "val_perplexity": stat(val),
            **extra,
        }

    models = {
        "lstm-1x256": rnn("lstm", None, 4.30, 4.40),  # an older record: no block recorded, a plain stack
        "lstm-2x256": rnn("lstm", "plain", 4.20, 4.30),
        "mingru-3x88": rnn("mingru", "residual", 4.50, 4.60),
        "lstm-3x72": rnn("lstm", "residual", 4.25, 4.35),
        "lstm-3x72 dynamic": rnn("lstm", "residual", 3.90, 4.00) | {"evaluation": "dynamic"},
        "mingru-3x88 ensemble of 3": rnn("mingru", "residual", 4.00, 4.10, ensemble=3),
    }
    (text,) = residual_race(models)
    assert "test perplexity from best to worst: lstm-3x72 4.250 ± 0.010; mingru-3x88 4.500 ± 0.010." in text
    assert (
        "lstm-3x72, is 0.988x lstm-1x256, the plain stack of the same parameter count (4.300 ± 0.010) and 1.012x "
        "lstm-2x256, the best plain stack by validation (4.200 ± 0.010)." in text
    )
    assert residual_race({"lstm-2x256": models["lstm-2x256"]}) == []


def test_heldout_sweep_keeps_finished_runs_and_resumes_short_ones(tmp_path):
    from experiments import heldout

    cfg = dataclasses.replace(heldout.BASE, epochs=4)
    run = tmp_path / "run"
    assert sweep.job_state("heldout", cfg, run) == "new"
    (run / "checkpoints").mkdir(parents=True)
    saved = config.to_dict(cfg)
    del saved["weight_decay"]  # a run made before a field existed counts as that field's default
    (run / "config.json").write_text(json.dumps({"experiment": "heldout", "config": saved}))
    (run / "metrics.jsonl").write_text("".join(json.dumps({"epoch": e}) + "\n" for e in (1, 2, 3)))
    assert sweep.job_state("heldout", cfg, run) == "shorter"  # stopped at epoch 3: resumed
    (run / "metrics.jsonl").write_text("".join(json.dumps({"epoch": e}) + "\n" for e in (1, 2, 3, 4)))
    (run / "summary.json").write_text("{}")
    assert sweep.job_state("heldout", cfg, run) == "done"
    assert sweep.job_state("heldout", dataclasses.replace(cfg, epochs=9), run) == "shorter"  # lengthened: resumed
    assert sweep.job_state("heldout", dataclasses.replace(cfg, epochs=2), run) == "new"
    assert sweep.job_state("heldout", dataclasses.replace(cfg, dropout=0.1), run) == "new"
    for field, value in (("predict_every", 3), ("eval_every", 7), ("checkpoint_every", 2), ("keep_checkpoints", 9)):
        assert sweep.job_state("heldout", dataclasses.replace(cfg, **{field: value}), run) == "done", (
            field
        )  # the same run
    assert sweep.job_state("heldout", dataclasses.replace(cfg, weight_decay=0.1), run) == "new"
    cosine = dataclasses.replace(cfg, lr_schedule="cosine")
    (run / "config.json").write_text(json.dumps({"experiment": "heldout", "config": config.to_dict(cosine)}))
    assert (
        sweep.job_state("heldout", dataclasses.replace(cosine, epochs=9), run) == "new"
    )  # another horizon: another run
    (run / "summary.json").unlink()
    (run / "metrics.jsonl").write_text("".join(json.dumps({"epoch": e}) + "\n" for e in (1, 2)))
    assert sweep.job_state("heldout", cosine, run) == "shorter"  # stopped before its own end: resumed


def test_runs_share_every_core_when_the_machine_is_otherwise_idle():
    from experiments import common

    together = {"workers": 1, "pin": False}
    assert common.placement("auto", load=lambda: (0.1, 0.0, 0.0)) == together
    assert common.placement("auto", load=lambda: (1.2, 0.0, 0.0)) == {}  # busy: one pinned run per core
    assert common.placement("together", load=lambda: (9.0, 0.0, 0.0)) == together
    assert common.placement("per-core", load=lambda: (0.0, 0.0, 0.0)) == {}


@pytest.mark.slow
def test_heldout_scores_both_protocols_and_logs_every_test_scoring(tmp_path, data_dir, test_log):
    import argparse

    from experiments import heldout
    from rnn_jax import testlog, train

    cfg = dataclasses.replace(heldout.BASE, hidden=16, epochs=1, batch_size=16, num_steps=16)
    train.run(train.RunRequest(cfg, tmp_path / "seed_0", data_dir=str(data_dir), exp="heldout", quiet=True))
    args = argparse.Namespace(
        dynamic_steps=(("sgd", 0.0),), dynamic_segments=(50,), windows_draw={"windows": 64, "length": 32, "seed": 0}
    )
    out = heldout.rnn_models("lstm", "lstm none", cfg, [tmp_path / "seed_0"], heldout.corpus(str(data_dir)), args)
    static, dynamic = out["lstm"], out["lstm dynamic"]
    assert static["test_loss_windows"]["windows"] == 64 and dynamic["test_loss_windows"] is None
    stream = np.log(static["test_perplexity"]["mean"])
    assert static["test_loss_windows"]["mean"] > stream - 0.05  # no window has more context than the stream
    rows = testlog.read(test_log)
    assert [(r["model"], r["protocol"]) for r in rows] == [
        ("lstm static", "stream"),
        ("lstm dynamic", "stream"),
        ("lstm static", "windows"),
    ]
    assert rows[0]["result"]["loss"] == pytest.approx(stream)


def git_commit(root):
    for argv in (["init", "-q"], ["add", "-A"], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "r"]):
        subprocess.run(["git", "-C", str(root), *argv], check=True, capture_output=True)


def test_the_report_refuses_records_that_lost_rows_against_git_head(results_dir, capsys):
    fake("seq", [1.0, 1.1, 1.2])
    fake("random", [1.5, 1.6, 1.7])
    models = {"rnn": {"kind": "rnn"}, "5-gram": {"kind": "ngram"}}
    common.write("heldout_x", {"name": "heldout_x", "models": models})
    git_commit(results_dir)
    seq = results_dir / "results" / "seq.json"
    rec = json.loads(seq.read_text())
    seq.write_text(json.dumps({**rec, "seeds": rec["seeds"][:2]}))  # rewritten by hand, not merged
    (results_dir / "results" / "random.json").unlink()
    (results_dir / "results" / "heldout_x.json").write_text(json.dumps({"name": "x", "models": {"rnn": models["rnn"]}}))
    assert report.main() == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith("error: records lost rows against git HEAD: ") and "\n" not in line
    for lost in ("seq.json (seeds: seed=2)", "random.json (the whole record)", "heldout_x.json (models: 5-gram)"):
        assert lost in line
    assert not (results_dir / "RESULTS.md").exists()  # nothing published
    assert report.main(["--allow-lost-rows"]) == 0
    assert "warning: publishing records that lost rows" in capsys.readouterr().err
    assert (results_dir / "RESULTS.md").is_file()


@pytest.mark.parametrize(
    "text,message",
    [
        ("{not json", "is not a readable record"),
        ("[]", "a JSON list, not a record"),
        ('{"name": "x", "seeds": [{"perplexity": 1}], "summary": {}}', "seeds is not a list of objects"),
        ('{"name": "x", "models": {"a": 1}}', "models is not an object of objects"),
        ('{"name": "x", "models": {"a": {"test_loss": 1}}}', "model 'a' has no kind"),
        ('{"name": "x", "seeds": [{"seed": 0}], "summary": {}}', "seed 0 has no diverged_epoch or curve list"),
        ('{"name": "x", "config": [], "seeds": []}', "config is not an object"),
    ],
)
def test_the_report_names_a_record_that_is_not_one_in_one_line(results_dir, capsys, text, message):
    fake("seq", [1.0, 1.1, 1.2])
    (results_dir / "results" / "bad.json").write_text(text)
    assert report.main() == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert err.startswith(f"error: {results_dir / 'results' / 'bad.json'} ") and message in err


def test_the_report_refuses_a_record_path_that_is_not_a_regular_file(results_dir, capsys):
    (results_dir / "results").mkdir(parents=True)
    os.mkfifo(results_dir / "results" / "seq.json")  # reading it would block forever
    assert report.main() == 2
    assert "seq.json is a FIFO, not a record file" in capsys.readouterr().err


def test_a_record_written_again_merges_and_never_drops_an_entry(results_dir, capsys):
    v = lambda x: {"kind": "rnn", "v": x}
    common.write("m", {"name": "m", "models": {"a": v(1), "b": v(1)}, "rows": [{"alpha": 1, "v": 1}]})
    common.write("m", {"name": "m", "models": {"b": v(2), "c": v(2)}, "rows": [{"alpha": 2, "v": 2}]})
    common.write("m", {"name": "m", "screening": {"a r": v(1)}})
    common.write("m", {"name": "m", "screening": {"c r": v(2)}})  # a sweep of other families keeps the first's
    rec = common.load("m")
    assert rec["models"] == {"a": v(1), "b": v(2), "c": v(2)} and rec["screening"] == {"a r": v(1), "c r": v(2)}
    assert rec["rows"] == [{"alpha": 1, "v": 1}, {"alpha": 2, "v": 2}]
    fake("seq", [1.0, 1.1, 1.2])
    one = json.loads((results_dir / "results" / "seq.json").read_text())
    one["seeds"] = [{**one["seeds"][0], "perplexity": 4.0}]
    common.write("seq", {**one, "summary": {"seeds": 1}})  # seed 0 again: seeds 1 and 2 are kept
    rec = common.load("seq")
    assert [s["seed"] for s in rec["seeds"]] == [0, 1, 2] and rec["seeds"][0]["perplexity"] == 4.0
    assert rec["summary"]["seeds"] == 3 and rec["summary"]["perplexity"]["mean"] == pytest.approx((4.0 + 1.1 + 1.2) / 3)
    assert records.merge_records(rec, rec) == rec
    common.write("seq", {**one, "config": {"epochs": 7}})  # another configuration: the old record is kept aside
    aside = list((results_dir / "results").glob("seq.json.replaced-*"))
    assert len(aside) == 1 and [s["seed"] for s in json.loads(aside[0].read_text())["seeds"]] == [0, 1, 2]
    assert "kept as" in capsys.readouterr().err and common.load("seq")["config"] == {"epochs": 7}
