import dataclasses
import json
import math

import jax
import numpy as np
import optax
import pytest

from rnn_jax import baselines, config, corpora, data, evaluate, heldout, model, train
from rnn_jax import experiments as experiments_lib
from rnn_jax.runs import load_run


@pytest.fixture(scope="module")
def run(tmp_path_factory, data_dir):
    """A small model trained on the book with 10% held out."""
    run_dir = tmp_path_factory.mktemp("eval") / "run"
    cfg = dataclasses.replace(
        experiments_lib.BASE,
        hidden=64,
        epochs=6,
        val_fraction=0.1,
        test_fraction=0.05,
        eval_every=3,
        predict_every=0,
        max_tokens=20_000,
    )
    summary = train.run(train.RunRequest(cfg, run_dir, data_dir=str(data_dir), exp="small", quiet=True))
    return run_dir, cfg, summary


@pytest.mark.slow
def test_evaluation_is_one_stream_with_the_state_carried(key):
    params = jax.tree.map(lambda p: 20 * p, model.init_params(key, 28, 16))
    cfg = dataclasses.replace(experiments_lib.BASE, hidden=16)
    tokens = np.asarray(jax.random.randint(key, (2_500,), 1, 28), np.int32)  # over two chunks
    context = np.asarray([5, 7], np.int32)
    got = heldout.evaluate(params, tokens, model.ModelSpec.from_config(cfg), context=context)
    stream = np.concatenate([context[-1:], tokens])
    logits_T1V, _ = model.forward(params, model.init_hidden(1, 16), stream[None, :-1])
    nll = optax.softmax_cross_entropy_with_integer_labels(logits_T1V[:, 0], stream[1:])
    assert got["tokens"] == len(tokens)
    np.testing.assert_allclose(got["loss"], float(nll.mean()), rtol=1e-5)
    assert math.isclose(got["bits_per_char"], got["loss"] / math.log(2))
    without = heldout.evaluate(params, tokens, model.ModelSpec.from_config(cfg))
    assert without["tokens"] == len(tokens) - 1
    np.testing.assert_allclose(without["loss"], float(nll[1:].mean()), rtol=1e-5)


@pytest.mark.slow
def test_validation_is_logged_and_beats_the_unigram(run):
    run_dir, cfg, summary = run
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows if "val_perplexity" in r] == [3, 6]
    assert summary["val_perplexity"] == rows[-1]["val_perplexity"]
    assert summary["val_perplexity"] < summary["baselines"]["unigram"]["perplexity"]
    assert summary["baselines"]["uniform"]["perplexity"] == pytest.approx(28)
    saved = json.loads((run_dir / "config.json").read_text())["data"]
    assert saved["train_tokens"] == 20_000 and saved["val_tokens"] == round(170_580 * 0.1)
    assert (run_dir / "best").is_dir()


@pytest.mark.slow
def test_cli_scores_the_runs_split_with_baselines(run, capsys):
    run_dir, _, summary = run
    assert evaluate.main(["--run-dir", str(run_dir), "--baselines"]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("rnn "))
    assert float(line.split()[1]) == pytest.approx(summary["val_perplexity"], rel=1e-4)
    assert "5-gram" in out and "unigram" in out


@pytest.mark.slow
def test_best_checkpoint_is_the_lowest_validation_point(run, capsys):
    run_dir, _, _ = run
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    best = min(r["val_perplexity"] for r in rows if "val_perplexity" in r)
    assert evaluate.main(["--run-dir", str(run_dir), "--best"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("rnn "))
    assert float(line.split()[1]) == pytest.approx(best, rel=1e-4)


@pytest.mark.slow
def test_best_needs_a_validation_run(tmp_path, data_dir, capsys):
    cfg = dataclasses.replace(experiments_lib.EXPERIMENTS["tiny"], epochs=1, predict_every=0)
    train.run(train.RunRequest(cfg, tmp_path / "r", data_dir=str(data_dir), quiet=True))
    assert evaluate.main(["--run-dir", str(tmp_path / "r"), "--best"]) == 2
    assert "has no best checkpoint" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_on_another_book_reports_unknown_characters(run, data_dir, tmp_path, capsys):
    run_dir, _, _ = run
    assert evaluate.main(["--run-dir", str(run_dir), "--corpus", str(data_dir / "war_of_the_worlds.txt")]) == 0
    out = capsys.readouterr().out
    assert float(out.splitlines()[1].split()[1]) < 28
    run_raw = tmp_path / "raw"
    cfg = dataclasses.replace(experiments_lib.EXPERIMENTS["tiny"], preprocess="raw", epochs=1, predict_every=0)
    train.run(train.RunRequest(cfg, run_raw, data_dir=str(data_dir), quiet=True))
    odd = tmp_path / "odd.txt"
    odd.write_text("Time travel — 1895!\n", encoding="utf-8")
    assert evaluate.main(["--run-dir", str(run_raw), "--corpus", str(odd)]) == 0
    err = capsys.readouterr().err
    assert "characters not in the run's vocabulary map to <unk>" in err and "'—'" in err


def test_raw_mode_keeps_case_and_punctuation(data_dir):
    text = data.load_text(data_dir / "timemachine.txt", "raw")
    assert text.startswith("The Time Machine, by H. G. Wells [1898]")
    assert "  " not in text and "\n" not in text


def test_cli_errors_for_a_missing_run(tmp_path, capsys):
    assert evaluate.main(["--run-dir", str(tmp_path)]) == 2
    assert "is not a run directory" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_reports_dynamic_beside_static(run, capsys):
    run_dir, _, _ = run
    assert (
        evaluate.main(
            ["--run-dir", str(run_dir), "--split", "test", "--dynamic", "--dynamic-lr", "0", "--dynamic-segment", "100"]
        )
        == 0
    )
    lines = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[1:]}
    assert set(lines) == {"rnn", "rnn-dynamic"}
    assert float(lines["rnn-dynamic"][1]) == pytest.approx(float(lines["rnn"][1]), rel=1e-4)  # no step: static
    assert lines["rnn"][3] == lines["rnn-dynamic"][3] == str(round(170_580 * 0.05))


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--dynamic-lr", "nan"], "--dynamic-lr"),
        (["--dynamic-segment", "0"], "--dynamic-segment"),
        (["--dynamic-decay", "1"], "--dynamic-decay"),
    ],
)
def test_cli_rejects_bad_dynamic_options(tmp_path, capsys, argv, message):
    assert evaluate.main(["--run-dir", str(tmp_path), "--dynamic", *argv]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_without_a_validation_part_the_text_after_the_trained_prefix_is_scored(tmp_path, data_dir, capsys):
    cfg = dataclasses.replace(experiments_lib.EXPERIMENTS["tiny"], epochs=1, predict_every=0)
    train.run(train.RunRequest(cfg, tmp_path / "r", data_dir=str(data_dir), quiet=True))
    assert evaluate.main(["--run-dir", str(tmp_path / "r"), "--baselines"]) == 0
    out, err = capsys.readouterr()
    assert "no validation part: scoring the 168,580 characters after the 2,000 trained on" in err
    lines = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
    tokens, vocab = data.load_corpus(data_dir / "timemachine.txt")
    params = load_run(tmp_path / "r")[2]
    want = heldout.evaluate(params, tokens[2_000:], model.ModelSpec.from_config(cfg), context=tokens[:2_000])
    assert lines["rnn"][3] == str(len(tokens) - 2_000) == "168580"
    assert float(lines["rnn"][1]) == pytest.approx(want["perplexity"], rel=1e-4)
    ngrams = baselines.evaluate_baselines(tokens[:2_000], tokens[2_000:], len(vocab), context=tokens[:2_000])
    assert float(lines["5-gram"][1]) == pytest.approx(ngrams["5-gram"]["perplexity"], rel=1e-4)
    assert evaluate.main(["--run-dir", str(tmp_path / "r"), "--split", "unseen"]) == 0
    out, err = capsys.readouterr()
    assert err == "" and float(out.splitlines()[1].split()[1]) == pytest.approx(want["perplexity"], rel=1e-4)


@pytest.mark.slow
def test_cli_scores_under_the_windows_protocol_and_logs_it(run, capsys, test_log):
    from rnn_jax import testlog

    run_dir, _, _ = run
    argv = ["--run-dir", str(run_dir), "--split", "test", "--protocol", "windows", "--windows", "64"]
    assert evaluate.main([*argv, "--window-length", "32", "--baselines"]) == 0
    out = capsys.readouterr().out
    assert "protocol windows: 64 windows of 32 characters (seed 0), each from a zero state" in out
    assert "rnn loss by window position: 0: " in out and "3-gram" in out
    logged = {r["model"]: r for r in testlog.read(test_log)}
    assert logged["rnn"]["protocol"] == "windows" and logged["rnn"]["result"]["window_length"] == 32
    assert logged["3-gram"]["protocol"] == "windows"
    assert evaluate.main([*argv, "--dynamic"]) == 2
    assert "dynamic evaluation adapts along one stream" in capsys.readouterr().err
    assert evaluate.main([*argv, "--window-length", "100000"]) == 2
    assert "needs 100001 tokens" in capsys.readouterr().err


@pytest.mark.parametrize("segment", ["9" * 30, str(2**31)])
def test_a_segment_beyond_the_range_is_refused_with_it(tmp_path, capsys, segment):
    assert evaluate.main(["--run-dir", str(tmp_path), "--dynamic", "--dynamic-segment", segment]) == 2
    assert f"--dynamic-segment must be in [1, {config.INT_LIMIT}], got {segment}" in capsys.readouterr().err


@pytest.mark.slow
def test_a_segment_longer_than_the_text_is_capped_at_it(run, capsys):
    run_dir, _, _ = run
    argv = ["--run-dir", str(run_dir), "--split", "test", "--dynamic", "--dynamic-lr", "0.1"]
    figures = []
    for segment in (str(round(170_580 * 0.05)), str(2**31 - 1)):  # the whole part; far beyond it (no allocation)
        assert evaluate.main([*argv, "--dynamic-segment", segment]) == 0
        figures.append(capsys.readouterr().out.splitlines()[2].split())
    assert figures[0] == figures[1]


def scorings(test_log):
    return [json.loads(line) for line in test_log.read_text().splitlines()] if test_log.exists() else []


@pytest.mark.slow
def test_a_scoring_of_test_text_is_logged_by_content_and_span_whatever_the_spelling(run, data_dir, tmp_path, test_log):
    run_dir, _, _ = run
    book = data_dir / "timemachine.txt"
    copy = tmp_path / "copy.txt"
    copy.write_bytes(book.read_bytes())
    n, n_test = 170_580, round(170_580 * 0.05)
    sha1 = corpora.sha1_of(book)
    cases = [
        (["--split", "test"], True),
        (["--split", "test", "--corpus", str(book)], True),
        (["--split", "test", "--corpus", f"{book.parent}/../{book.parent.name}/./{book.name}"], True),
        (["--split", "test", "--corpus", str(copy)], True),  # another path, the same bytes
        (["--split", "all", "--corpus", str(copy)], True),  # the whole text holds the test part
        (["--split", "val", "--corpus", str(copy)], False),
        (["--split", "test", "--corpus", str(data_dir / "war_of_the_worlds.txt")], False),  # other text
    ]
    for argv, logged in cases:
        before = len(scorings(test_log))
        assert evaluate.main(["--run-dir", str(run_dir), *argv]) == 0
        rows = scorings(test_log)[before:]
        assert len(rows) == logged, argv
        if logged:
            span = [0, n] if "all" in argv else [n - n_test, n]
            assert (rows[0]["text_sha1"], rows[0]["span"], rows[0]["protocol"]) == (sha1, span, "stream")
            assert (rows[0]["corpus"], rows[0]["split"]) == ("timemachine", "test")
