"""Tiny Shakespeare by name, nanoGPT's split, the test log, and the benchmark script end to end (smoke sizes)."""

import json
from pathlib import Path

import numpy as np
import pytest

from rnn_jax import config, evaluate, testlog, train

REPO = Path(__file__).resolve().parent.parent
TINY = [
    "--hidden",
    "16",
    "--epochs",
    "1",
    "--max-tokens",
    "20000",
    "--batch-size",
    "8",
    "--num-steps",
    "20",
    "--matmul-dtype",
    "float32",
    "--quiet",
]


@pytest.fixture(scope="module")
def run(tmp_path_factory, data_dir):
    run_dir = tmp_path_factory.mktemp("shakespeare") / "run"
    assert train.main(["--exp", "shakespeare", "--data-dir", str(data_dir), "--run-dir", str(run_dir), *TINY]) == 0
    return run_dir


@pytest.mark.slow
def test_the_experiment_trains_on_its_own_corpus_every_character_kept(run):
    saved = json.loads((run / "config.json").read_text())
    assert Path(saved["data"]["path"]).name == "tinyshakespeare.txt"
    assert saved["data"]["train_tokens"] == 20000 and saved["data"]["test_tokens"] == 111_540
    assert saved["predict_prefixes"] == ["ROMEO:"]
    vocab = json.loads((run / "vocab.json").read_text())["idx_to_token"]
    assert len(vocab) == 66 and "\n" in vocab and "R" in vocab and "!" in vocab
    summary = json.loads((run / "summary.json").read_text())
    assert summary["predictions"]["ROMEO:"].startswith("ROMEO:")


@pytest.mark.slow
def test_each_scoring_of_a_test_part_is_logged_and_counted(run, data_dir, test_log, capsys):
    assert evaluate.main(["--run-dir", str(run), "--split", "val", "--data-dir", str(data_dir)]) == 0
    assert testlog.read(test_log) == []  # validation is not the test part
    for _ in range(2):
        assert evaluate.main(["--run-dir", str(run), "--split", "test", "--data-dir", str(data_dir)]) == 0
    rows = testlog.read(test_log)
    assert len(rows) == 2 and testlog.counts(rows) == {("shakespeare", "test"): 2}
    row = rows[0]
    assert row["model"] == "rnn" and row["split"] == "test" and len(row["config_hash"]) == 12
    assert row["result"]["tokens"] == 111_540 and np.isfinite(row["result"]["loss"])
    assert row["commit"] is None or len(row["commit"].split("+")[0]) == 40
    printed = capsys.readouterr().out.splitlines()[-1].split()
    assert float(printed[1]) == pytest.approx(rows[-1]["result"]["perplexity"], abs=1e-3)


def test_a_torn_last_line_of_the_log_is_skipped(test_log):
    testlog.record("timemachine", "test", "m", {"a": 1}, {"loss": 1.0})
    with open(test_log, "a") as f:
        f.write('{"corpus": "timem')
    assert [r["model"] for r in testlog.read(test_log)] == ["m"]
    assert testlog.config_hash({"a": 1, "b": 2}) == testlog.config_hash({"b": 2, "a": 1})


@pytest.mark.slow
def test_the_benchmark_script_runs_end_to_end(tmp_path, data_dir, monkeypatch, test_log):
    from experiments import common, shakespeare
    from experiments.sections.figures import pm
    from experiments.sections.shakespeare import shakespeare_section

    monkeypatch.setattr(common, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(common, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(
        shakespeare, "SMOKE_MODELS", {"lstm-1x8": {"hidden": 8, "epochs": 1, "batch_size": 16, "num_steps": 32}}
    )
    argv = ["--smoke", "--seeds", "2", "--data-dir", str(data_dir), "--out", str(tmp_path / "results")]
    shakespeare.main(argv)
    out = json.loads((tmp_path / "results" / "shakespeare_smoke.json").read_text())
    assert out["split"]["characters"] == 60_000 and out["split"]["test"] == 6_000
    models = out["models"]
    kinds = {(m["kind"], m["evaluation"]) for m in models.values()}
    assert kinds == {
        ("ngram", "static"),
        ("ngram", "adaptive"),
        ("ppm", "adaptive"),
        ("rnn", "static"),
        ("rnn", "dynamic"),
    }
    assert {"PPMd H order", "PPMd I order"} <= {n.rsplit(" ", 1)[0] for n in models}
    lstm = models["lstm-1x8"]
    assert len(lstm["test_loss"]["seeds"]) == 2 and lstm["params"] > 0 and lstm["wall_seconds"] > 0
    assert models["lstm-1x8 ensemble of 2"]["test_loss"]["mean"] <= max(lstm["test_loss"]["seeds"])
    for m in models.values():
        assert set(m["test_loss"]) == {"mean", "std", "seeds"} and np.isfinite(m["test_loss"]["mean"])
    # both protocols on every static row; dynamic evaluation and adaptive counting follow one stream only
    classes = {n: m["class"] for n, m in models.items()}
    assert classes["lstm-1x8"] == "recurrent" and classes["lstm-1x8 dynamic"] == "dynamic"
    assert classes["lstm-1x8 + 3-gram"] == classes["lstm-1x8 ensemble of 2"] == "combined"
    for n, m in models.items():
        w = m["test_loss_windows"]
        if m["class"] in ("dynamic", "counting adaptive"):
            assert w is None, n
        else:
            assert {"mean", "std", "seeds", "se"} <= set(w) and 0 < w["se"] < 0.1, n
            assert w["windows"] == 256 and w["window_length"] == 64 and len(w["seeds"]) == len(m["test_loss"]["seeds"])
    lw = lstm["test_loss_windows"]
    assert lw["by_position"]["0"] > lw["by_position"]["10-49"]  # a window's first character has no context
    assert models["lstm-1x8 + 3-gram"]["mixture"]["weight_windows"] in shakespeare.MIX_WEIGHTS
    assert out["samples"]["texts"][0].startswith("ROMEO:") and len(out["samples"]["texts"]) == 3
    scored = out["test_scorings"]
    # counting: 5 streams and the 2 static n-grams' windows; each final seed: static, dynamic, per character, windows
    assert scored == len(testlog.read(test_log)) == 5 + 2 + 2 * 4
    assert sorted(r["protocol"] for r in testlog.read(test_log)).count("windows") == 2 + 2
    # the selection run trains on train only; the final runs on train + val, the whole text before the test part
    runs = tmp_path / "runs" / "smoke" / "shakespeare_smoke" / "lstm-1x8"
    select = json.loads((runs / "select" / "config.json").read_text())
    final = json.loads((runs / "seed_1" / "config.json").read_text())
    assert select["data"]["train_tokens"] == out["split"]["train"] and select["data"]["val_tokens"] == 3_000
    assert final["data"]["train_tokens"] == 54_000 and final["data"]["val_tokens"] == 0
    assert final["config"]["seed"] == 1 and models["lstm-1x8"]["selection"]["epochs"] == 1
    assert lstm["cpu_cores"] == json.loads((runs / "seed_1" / "summary.json").read_text())["cpu_cores"] >= 1
    # again: nothing retrains, and no test part is scored a second time for the same checkpoint and setting
    shakespeare.main([*argv, "--no-baselines"])
    again = json.loads((tmp_path / "results" / "shakespeare_smoke.json").read_text())
    assert again["models"]["lstm-1x8"]["test_loss"] == lstm["test_loss"]
    assert again["test_scorings"] == scored

    monkeypatch.setattr(common, "HERE", tmp_path)
    md = "\n".join(shakespeare_section("shakespeare_smoke"))
    assert f"Test-part scorings recorded in `results/test_log.jsonl`: {scored}." in md
    lw = lstm["test_loss_windows"]
    assert f"| lstm-1x8 (2 seeds) | recurrent | {pm(lstm['test_loss'], 4)} | {pm(lw, 4)} |" in md
    assert "| lstm-1x8 dynamic (2 seeds) | dynamic | " in md and "| stream only |" in md
    gpt = "| nanoGPT baby GPT (6 layers, 10.7M parameters, ~3 min on an A100 GPU) | reported elsewhere | | 1.4697 |"
    assert gpt in md  # compared under its own protocol, windows, alone
    assert "Best dynamic model by validation: lstm-1x8 dynamic" in md and "x the PPMd " in md  # its own class
    assert "Best combined model by validation: lstm-1x8" in md
    assert "Under nanoGPT's protocol (windows), the best recurrent model by validation, lstm-1x8, scores " in md
    assert "against the 1.4697 reported for the nanoGPT baby GPT)" in md and "```\nROMEO:" in md
    assert (tmp_path / "results" / "figures" / "shakespeare_smoke.png").stat().st_size > 5_000
    # --score-only trains nothing: a final seed that is not there is left out, not trained
    (runs / "seed_1").rename(tmp_path / "seed_1")
    shakespeare.main([*argv, "--no-baselines", "--score-only"])
    assert not (runs / "seed_1").exists()
    scored_only = json.loads((tmp_path / "results" / "shakespeare_smoke.json").read_text())["models"]["lstm-1x8"]
    assert scored_only["seeds"] == [0] and scored_only["test_loss"]["seeds"] == lstm["test_loss"]["seeds"][:1]
    # runs of another configuration (--epochs 7 over 1-epoch runs) are not scored, and no entry is dropped for it
    shakespeare.main([*argv, "--no-baselines", "--score-only", "--epochs", "7"])
    kept = json.loads((tmp_path / "results" / "shakespeare_smoke.json").read_text())["models"]
    assert set(kept) == set(models) and kept["lstm-1x8"] == scored_only
    assert kept["lstm-1x8"]["config"]["epochs"] == 1


def test_every_models_selection_and_final_runs_are_valid_configurations():
    import dataclasses

    from experiments import shakespeare
    from rnn_jax import config

    for name, overrides in {**shakespeare.MODELS, **shakespeare.SMOKE_MODELS}.items():
        cfg = config.validate(dataclasses.replace(shakespeare.BASE, **overrides))
        final = config.validate(shakespeare.final_cfg(cfg, 2))  # no validation part: nothing scores one
        assert (final.val_fraction, final.val_windows, final.seed) == (0.0, 0, 2), name


def test_a_record_merges_and_mixtures_never_sit_in_the_recurrent_class():
    from experiments import classes, shakespeare

    old = {"a": {"kind": "ppm", "evaluation": "adaptive"}, "b": {"kind": "rnn", "evaluation": "static", "x": 2}}
    new = {"b": {"kind": "rnn", "evaluation": "dynamic"}, "c": {"kind": "rnn", "evaluation": "static", "ensemble": 2}}
    got = shakespeare.merged(old, new)
    assert {n: m["class"] for n, m in got.items()} == {"a": "counting adaptive", "b": "dynamic", "c": "combined"}
    assert "x" not in got["b"]  # an entry scored again replaces the old one whole
    rnn = {"kind": "rnn", "evaluation": "static"}
    assert classes.class_of(rnn) == "recurrent"
    assert classes.class_of({**rnn, "mixture": {"weight": 1.0}}) == "combined"  # even at weight 1
    assert classes.class_of({**rnn, "ensemble": 3}) == "combined"
    assert classes.class_of({**rnn, "evaluation": "dynamic"}) == "dynamic"
    assert classes.REFERENCE["dynamic"] == "counting adaptive"
    models = {
        "mix": {**rnn, "mixture": {}, "val_loss": {"mean": 1.0}},
        "lstm": {**rnn, "val_loss": {"mean": 1.2}},
    }
    assert classes.best_of(models, "recurrent")[0] == "lstm"


def test_the_race_at_equal_wall_time_reads_each_lever_where_the_recipes_clock_stopped():
    from experiments.sections import levers

    def lever(seconds, stream, cores=2):
        curve = [[t, None, s, s + 0.02] for t, s in zip(seconds, stream, strict=True)]
        return {"wall_curve": curve, "cpu_cores": cores}

    rec = {
        "epochs": 3,
        "levers": {
            "lstm-1x512": lever([10.0, 20.0, 30.0], [2.0, 1.9, 1.8]),
            "faster": lever([5.0, 10.0, 15.0, 30.0], [1.95, 1.85, 1.80, 1.70]),
            "slower": lever([25.0, 50.0], [1.9, 1.6]),
            "late": lever([31.0], [1.0]),
            "other cores": lever([1.0], [1.0], cores=1),
        },
    }
    assert levers.at_seconds(rec["levers"]["slower"]["wall_curve"], 30.0) == [25.0, None, 1.9, 1.92]
    rows = {line.split(" | ")[0].strip("| "): line for line in levers.equal_wall(rec) if line.startswith("| ")}
    assert rows["faster"] == "| faster | 4 | 1.7000 | 1.7200 | -0.1000 |"
    assert rows["slower"] == "| slower | 1 | 1.9000 | 1.9200 | +0.1000 |"  # its better second epoch came too late
    assert rows["late"] == "| late | 0 | — | — | — |"
    assert "other cores" not in rows and rows["lstm-1x512"].endswith("| +0.0000 |")
    del rec["levers"]["lstm-1x512"]["cpu_cores"]  # the recipe's cores unknown: no race at equal wall time
    assert levers.equal_wall(rec) == []


def test_a_familys_budget_is_the_recipes_wall_time_and_flops_whichever_binds():
    from experiments import shakespeare_levers

    def lever(seconds_per_epoch, flop_per_epoch, epochs=8):
        curve = [[seconds_per_epoch * (e + 1), None, 2.0, None] for e in range(epochs)]
        return {"wall_curve": curve, "train_flop": flop_per_epoch * epochs}

    levers = {"lstm-1x512": lever(60.0, 1e13), "slow": lever(80.0, 1e13), "costly": lever(30.0, 2e13)}
    assert shakespeare_levers.budget_epochs(levers, "lstm-1x512", 40) == 40
    assert shakespeare_levers.budget_epochs(levers, "slow", 40) == 30  # 40 x 60 / 80 s: the wall binds
    assert shakespeare_levers.budget_epochs(levers, "costly", 40) == 20  # half the epochs' FLOPs: compute binds
    assert shakespeare_levers.budget_epochs({**levers, "x": lever(1e6, 1e13)}, "x", 40) == 1


def test_each_raced_recurrence_trains_for_the_budget_its_probe_measured():
    from experiments import common, shakespeare, shakespeare_families, shakespeare_levers

    probe = common.load("shakespeare_levers")
    assert probe is not None and set(shakespeare_families.RACE_BUDGET) == set(shakespeare_families.FAMILIES)
    for name, ceiling in shakespeare_families.RACE_BUDGET.items():
        budget = shakespeare_levers.budget_epochs(probe["levers"], name, shakespeare_families.RECIPE_EPOCHS)
        assert ceiling == budget, f"{name}: a budget of {ceiling} epochs recorded, the probe gives {budget}"
        epochs = shakespeare_families.RACE_EPOCHS[name]
        assert epochs <= budget and probe["levers"][name]["config"]["epochs"] == epochs  # the probe is its selection
        assert shakespeare.MODELS[name]["epochs"] == epochs and shakespeare.MODELS[name]["block"] == "residual"


def test_every_lever_is_a_valid_run_that_differs_from_the_recipe_only_where_it_says():
    from experiments import shakespeare_levers

    recipe = config.to_dict(shakespeare_levers.lever_config({}, 8))
    for name, overrides in shakespeare_levers.LEVERS.items():
        cfg = config.to_dict(shakespeare_levers.lever_config(overrides, 8))  # validated
        assert {k for k in cfg if cfg[k] != recipe[k]} <= set(overrides), name
        assert cfg["epochs"] == 8
    assert shakespeare_levers.LEVERS["lstm-3x152-reset-0.1"]["reset_fraction"] == 0.1


def test_the_race_compares_each_residual_recurrence_with_what_is_reported_for_it_under_windows():
    from experiments.sections.shakespeare import model_row, race_targets

    def entry(cell, windows, block="residual", **extra):
        w = {"mean": windows, "std": 0.001, "seeds": [windows] * 3, "se": 0.002}
        cfg = {"cell": cell, "block": block}
        return {"kind": "rnn", "evaluation": "static", "config": cfg, "test_loss_windows": w, **extra}

    models = {
        "mingru-3x184": entry("mingru", 1.530),
        "minlstm-3x176": entry("minlstm", 1.560),
        "lru-3x168": entry("lru", 1.600),
        "lstm-1x768": entry("lstm", 1.47, block="plain"),  # not in residual blocks: not raced
        "mingru-3x184 + 7-gram": entry("mingru", 1.40, mixture={"weight": 0.9}),  # combined: not a recurrence
    }
    (text,) = [line for line in race_targets(models) if line]
    assert "mingru-3x184: 1.5300 ± 0.0010 (3 seeds), below the 1.548 Feng et al. report for minGRU, +0.0603" in text
    assert "minlstm-3x176: 1.5600 ± 0.0010 (3 seeds), not below the 1.555 Feng et al. report for minLSTM" in text
    assert "lru-3x168: 1.6000 ± 0.0010 (3 seeds), +0.1303 against the nanoGPT baby GPT" in text
    assert text.index("mingru-3x184:") < text.index("minlstm-3x176:") < text.index("lru-3x168:")  # best first
    assert "lstm-1x768" not in text and "7-gram" not in text
    assert race_targets({"lstm-1x768": models["lstm-1x768"]}) == []
    stat = {"mean": 1.5, "std": 0.01, "seeds": [1.5, 1.5]}
    row = {**models["lru-3x168"], "test_loss": stat, "test_bits_per_char": stat, "test_perplexity": stat}
    row |= {"val_loss": stat, "wall_seconds": 1234.4, "cpu_cores": 2, "selection": {"best_epoch": 8, "epochs": 8}}
    assert "| 1,234 (2 cores) |" in model_row("lru-3x168", row)
    assert "| 1,234 |" in model_row("lru-3x168", {**row, "cpu_cores": None})


def test_a_lever_run_that_is_a_models_selection_run_is_drawn_once():
    from experiments.sections.shakespeare import model_curves

    curve = [[1.0, 1e9, 2.0, 2.1]]
    levers = {"epochs": 8, "levers": {"mingru-3x184": {"wall_curve": curve}, "reset-0.25": {"wall_curve": curve}}}
    rec = {"models": {}, "split": {}}
    assert [c[0] for c in model_curves(rec, levers)] == ["lever mingru-3x184, 8 epochs", "lever reset-0.25, 8 epochs"]
    assert [c[0] for c in model_curves(rec, levers, {"mingru-3x184"})] == ["lever reset-0.25, 8 epochs"]
