"""What a training command asks for and what it resolves to: a new run's config from its experiment and flags, a
resumed run's from its config.json, and the request of each stage of a chain."""

import dataclasses
import json
from pathlib import Path

import pytest

from rnn_jax import checkpoint, config, launch, train
from rnn_jax import experiments as experiments_lib

TINY = experiments_lib.EXPERIMENTS["tiny"]


def test_only_the_config_flags_given_override():
    args = train.build_parser().parse_args(["--exp", "tiny", "--hidden", "8", "--run-dir", "R", "--quiet"])
    req = launch.Request.from_args(args)
    assert req.overrides == {"hidden": 8}
    assert (req.exp, req.run_dir, req.quiet, req.resume) == ("tiny", "R", True, False)


def test_a_new_run_is_its_experiment_with_the_overrides_and_the_experiments_corpus():
    req = launch.resolve(launch.Request(overrides={"hidden": 8}))
    assert req.exp == "seq" and req.cfg == dataclasses.replace(experiments_lib.EXPERIMENTS["seq"], hidden=8)
    assert req.corpus is None
    for exp, corpus in experiments_lib.CORPUS_OF.items():
        assert launch.resolve(launch.Request(exp=exp)).corpus == corpus
        assert launch.resolve(launch.Request(exp=exp, corpus="other.txt")).corpus == "other.txt"


@pytest.mark.parametrize(
    "req,message",
    [
        (launch.Request(init_from_best=True), "--init-from-best goes with --init-from"),
        (launch.Request(resume=True), "--resume needs the --run-dir"),
        (launch.Request(resume=True, run_dir="R", init_from="S"), "--init-from starts a new run"),
    ],
)
def test_requests_that_cannot_run_are_refused(req, message):
    with pytest.raises(config.ConfigError, match=message):
        launch.resolve(req)


def saved_run(run_dir: Path, **fields) -> Path:
    run_dir.mkdir()
    saved = {"experiment": "tiny", "config": config.to_dict(TINY), "data": {"path": "/books/tm.txt"}, **fields}
    (run_dir / "config.json").write_text(json.dumps(saved))
    return run_dir


def test_a_resume_starts_from_what_the_run_saved(tmp_path):
    run = saved_run(tmp_path / "run", predict_prefixes=["the ", ""], tensorboard=True)
    req = launch.resolve(launch.Request(resume=True, run_dir=str(run), overrides={"epochs": 9}))
    assert req.exp == "tiny" and req.cfg == dataclasses.replace(TINY, epochs=9) and req.resume
    assert req.corpus == "/books/tm.txt" and req.prefixes == ("the ",) and req.tensorboard is True
    req = launch.resolve(launch.Request(resume=True, run_dir=str(run), corpus="x.txt", predict_prefix=["a"]))
    assert req.corpus == "x.txt" and req.prefixes == ("a",)  # the command's own choices win


def test_a_resume_with_a_data_dir_reads_its_experiments_named_corpus_there(tmp_path):
    run = saved_run(tmp_path / "run")
    saved = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**saved, "experiment": "shakespeare"}))
    req = launch.resolve(launch.Request(resume=True, run_dir=str(run), data_dir="/data"))
    assert (req.corpus, req.data_dir) == ("shakespeare", "/data")  # not the default book in /data
    (run / "config.json").write_text(json.dumps(saved))  # an experiment with no named corpus: the default there
    assert launch.resolve(launch.Request(resume=True, run_dir=str(run), data_dir="/data")).corpus is None


def test_a_resume_before_the_first_checkpoint_starts_from_the_recorded_parameters(tmp_path):
    source = {"run": "/runs/src", "checkpoint": "best", "epoch": 4}
    run = saved_run(tmp_path / "run", init_from=source)
    req = launch.resolve(launch.Request(resume=True, run_dir=str(run)))
    assert (req.init_from, req.init_from_best, req.init_expect) == ("/runs/src", True, source)
    (run / "checkpoints" / "3").mkdir(parents=True)
    assert launch.resolve(launch.Request(resume=True, run_dir=str(run))).init_from is None
    assert checkpoint.latest_saved_epoch(run / "checkpoints") == 3


def test_a_config_json_that_is_not_a_runs_is_a_clear_error(tmp_path):
    (run := tmp_path / "run").mkdir()
    (run / "config.json").write_text(json.dumps({"experiment": "tiny"}))
    with pytest.raises(checkpoint.CheckpointError, match="not a run's configuration"):
        launch.resolve(launch.Request(resume=True, run_dir=str(run)))
    with pytest.raises(config.ConfigError, match="holds no run to resume"):
        launch.resolve(launch.Request(resume=True, run_dir=str(tmp_path / "none")))


def test_a_chain_is_named_by_its_experiment_or_recorded_in_the_run_it_resumes(tmp_path):
    chain = next(iter(experiments_lib.CHAINS))
    assert launch.chain_of(launch.Request(exp=chain)) == chain
    assert launch.chain_of(launch.Request(exp="tiny")) is None
    (tmp_path / "chain.json").write_text(json.dumps({"experiment": chain}))
    assert launch.chain_of(launch.Request(resume=True, run_dir=str(tmp_path))) == chain
    assert launch.chain_of(launch.Request(run_dir=str(tmp_path))) is None  # a new run does not read it


def test_a_stage_request_keeps_the_commands_flags():
    req = launch.Request(exp="book_random", corpus="c.txt", overrides={"hidden": 8}, quiet=True)
    stage = launch.stage_request(req, "seq_reset", Path("R/seq_reset"), resume=True, init_from="R/seq")
    assert stage == dataclasses.replace(req, exp="seq_reset", run_dir="R/seq_reset", resume=True, init_from="R/seq")
