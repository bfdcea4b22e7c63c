"""Layers 2..L of a stack as one stacked array per cell parameter: the trees that training walks have the
same structure at every depth >= 2, each layer is one row, and parameters saved one array per layer
(`W_xi_l2`, ...) are converted when read, while a resume of such a checkpoint is refused with what to do."""

import dataclasses
import shutil

import jax
import numpy as np
import pytest

from rnn_jax import checkpoint, generate, model, rundir, stack, train
from rnn_jax import experiments as experiments_lib
from rnn_jax import step as step_lib
from rnn_jax.files import read_json
from rnn_jax.runs import load_run

V, H = 28, 8
TINY = dataclasses.replace(
    experiments_lib.EXPERIMENTS["tiny"], max_tokens=600, predict_every=0, epochs=1, cell="gru", num_layers=3
)


def per_layer(params: dict) -> dict:
    """params in the layout with one array per layer of the stack (`W_xz_l2`, `W_xz_l3`, ...)."""
    out = {k: v for k, v in params.items() if not k.endswith(stack.UPPER)}
    for name, stacked in stack.upper_params(params).items():
        out |= {f"{name}_l{row + 2}": np.asarray(v) for row, v in enumerate(stacked)}
    return out


@pytest.mark.parametrize("cell", list(model.CELLS))
@pytest.mark.parametrize(
    "opt", [{"optimizer": "sgd"}, {"optimizer": "adam"}, {"optimizer": "adam", "weight_decay": 0.1}]
)
def test_the_trained_tree_has_one_structure_at_every_depth_from_two(cell, opt):
    def structure(num_layers):
        cfg = dataclasses.replace(experiments_lib.BASE, hidden=H, cell=cell, num_layers=num_layers, **opt)
        tx = step_lib.make_optimizer(cfg)
        return jax.tree.structure(jax.eval_shape(lambda: step_lib.init_state(cfg, V, tx)))

    assert structure(2) == structure(3) == structure(6)  # parameters, optimizer state, step: no per-layer leaves


@pytest.mark.parametrize("cell", list(model.CELLS))
def test_each_upper_layer_is_one_row_of_the_stacked_arrays(key, cell):
    params = model.init_params(key, V, H, model.ModelSpec(cell, num_layers=4))
    upper = stack.upper_params(params)
    assert set(upper) == set(model.CELLS[cell].init(key, key, H, H))
    for layer in (1, 2, 3):
        got = stack.layer_params(params, layer)
        assert set(got) == set(upper) and all(np.array_equal(got[k], upper[k][layer - 1]) for k in got)
    for n in (n for n in upper if n.startswith("W_")):  # each layer drawn from its own key
        assert not np.array_equal(upper[n][0], upper[n][1]), n


def test_per_layer_names_convert_to_the_stacked_layout(key):
    params = model.init_params(key, V, H, model.ModelSpec("lstm", num_layers=3))
    old = per_layer(params)
    assert stack.is_per_layer(old) and not stack.is_per_layer(params)
    new = stack.from_per_layer(old)
    assert set(new) == set(params) and all(np.array_equal(new[k], params[k]) for k in params)
    assert stack.from_per_layer(params) is params
    with pytest.raises(ValueError, match="W_hc"):
        stack.from_per_layer({k: v for k, v in old.items() if k != "W_hc_l2"})


@pytest.fixture(scope="module")
def stacked_run(tmp_path_factory, data_dir):
    run = tmp_path_factory.mktemp("stack") / "run"
    train.run(train.RunRequest(TINY, run, data_dir=str(data_dir), exp="tiny", quiet=True))
    return run


@pytest.mark.slow
def test_runs_saved_one_array_per_layer_are_read_converted_and_not_resumed(stacked_run, data_dir, tmp_path, capsys):
    old = tmp_path / "old"
    shutil.copytree(stacked_run, old)
    state, meta = checkpoint.restore_newest(old / "checkpoints", None)
    shutil.rmtree(old / "checkpoints")
    ckpts = checkpoint.Checkpoints(old)
    ckpts.save(int(state["epoch"]), {**state, "params": per_layer(state["params"])}, meta)
    ckpts.close()
    cfg, vocab, params, _ = load_run(old)
    _, _, want, _ = load_run(stacked_run)
    assert set(params) == set(want) and all(np.array_equal(params[k], want[k]) for k in want)
    assert generate.predict(params, vocab, "time", 10, model.ModelSpec.from_config(cfg)) == generate.predict(
        want, vocab, "time", 10, model.ModelSpec.from_config(cfg)
    )
    before = {f: (old / f).read_bytes() for f in ("config.json", "metrics.jsonl")}
    assert train.main(["--run-dir", str(old), "--resume", "--epochs", "2", "--quiet"]) == 2
    assert f"--init-from {old}" in capsys.readouterr().err
    assert {f: (old / f).read_bytes() for f in before} == before  # refused before anything was written
    assert (
        train.main(
            [
                "--exp",
                "tiny",
                "--cell",
                "gru",
                "--num-layers",
                "3",
                "--max-tokens",
                "600",
                "--epochs",
                "1",
                "--init-from",
                str(old),
                "--run-dir",
                str(tmp_path / "ft"),
                "--data-dir",
                str(data_dir),
                "--quiet",
            ]
        )
        == 0
    )


@pytest.mark.slow
def test_a_params_npz_saved_one_array_per_layer_is_converted(stacked_run, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(stacked_run, old, ignore=shutil.ignore_patterns("checkpoints"))
    _, _, want, _ = load_run(stacked_run)
    summary = read_json(old / "summary.json", "summary")
    rundir.save_final(old, per_layer(want), summary)
    with np.load(old / "params.npz") as f:
        assert "W_xz_l3" in f and "W_xz_upper" not in f
    _, _, params, _ = load_run(old)
    assert set(params) == set(want) and all(np.array_equal(params[k], want[k]) for k in want)
