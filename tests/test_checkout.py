"""Paths belong to the checkout a command runs in: results, the test log and the benchmark's peers, never the
folders of the copy the package was installed from."""

import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rnn_jax import checkout, testlog
from rnn_jax.bench import cli as bench_cli

REPO = Path(__file__).resolve().parent.parent


def make_checkout(folder: Path) -> Path:
    """A folder that counts as a checkout: pyproject.toml and an rnn_jax/ package."""
    (folder / "rnn_jax").mkdir(parents=True)
    (folder / "pyproject.toml").write_text("[project]\nname = 'rnn_jax'\n")
    return folder


def test_the_checkout_is_the_one_holding_the_folder(tmp_path):
    clone = make_checkout(tmp_path / "clone")
    (clone / "experiments" / "results").mkdir(parents=True)
    assert checkout.root(clone / "experiments" / "results") == clone.resolve()
    assert checkout.root(tmp_path) is None


def test_the_test_log_and_the_peers_are_those_of_the_checkout_run_in(tmp_path, monkeypatch):
    clone = make_checkout(tmp_path / "clone")
    (clone / "experiments" / "results").mkdir(parents=True)
    monkeypatch.delenv("RNN_JAX_TEST_LOG")
    monkeypatch.delenv(checkout.SHARED_ENV, raising=False)
    monkeypatch.chdir(clone / "experiments")
    assert testlog.log_path() == clone.resolve() / "experiments" / "results" / "test_log.jsonl"
    peer = tmp_path.resolve() / "shared" / "bench" / "d2l_torch_ref.py"
    assert bench_cli.build_parser().parse_args([]).peer_script == peer
    monkeypatch.setenv(checkout.SHARED_ENV, str(tmp_path / "elsewhere"))
    assert bench_cli.build_parser().parse_args([]).peer_script == tmp_path / "elsewhere" / "bench" / "d2l_torch_ref.py"
    monkeypatch.setenv("RNN_JAX_TEST_LOG", str(tmp_path / "log.jsonl"))
    assert testlog.log_path() == tmp_path / "log.jsonl"  # the variable wins


@pytest.mark.slow
def test_a_script_run_from_another_clone_writes_into_that_clone(tmp_path):
    # a second clone whose environment finds this checkout's packages first (PYTHONPATH here): the report it runs
    # reads and writes the second clone's records, RESULTS.md and README, never this checkout's
    clone = make_checkout(tmp_path / "clone")
    shutil.copytree(
        REPO / "experiments", clone / "experiments", ignore=shutil.ignore_patterns("results", "runs", "*.md")
    )
    (clone / "experiments" / "results").mkdir()
    (clone / "README.md").write_text("# clone\n<!-- results:start -->\nold\n<!-- results:end -->\n")
    ours = {p: p.read_bytes() for p in (REPO / "README.md", REPO / "experiments" / "RESULTS.md")}
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, str(clone / "experiments" / "report.py")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {clone.resolve() / 'experiments' / 'RESULTS.md'}" in proc.stdout
    assert (clone / "experiments" / "RESULTS.md").read_text().startswith("# Results of the experiments")
    assert "old" not in (clone / "README.md").read_text()
    assert {p: p.read_bytes() for p in ours} == ours


def test_every_console_entry_point_is_a_main_that_parses_its_flags():
    tomllib = pytest.importorskip("tomllib")
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert {"rnn-jax-train", "rnn-jax-generate", "rnn-jax-evaluate", "rnn-jax-bench"} <= set(scripts)
    for name, target in scripts.items():
        module, func = target.split(":")
        main = getattr(importlib.import_module(module), func)
        with pytest.raises(SystemExit) as exit_:
            main(["--help"])
        assert exit_.value.code == 0, name
