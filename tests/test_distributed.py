"""Data parallelism on CPU devices made with --xla_force_host_platform_device_count (one process each)."""

import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMON = [
    "--exp",
    "tiny",
    "--batch-size",
    "8",
    "--max-tokens",
    "1500",
    "--epochs",
    "3",
    "--predict-every",
    "0",
    "--checkpoint-every",
    "1",
    "--quiet",
]


def train(run_dir, data_dir, *argv, devices=4, extra_env=None, check=True, wait=True):
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",  # the host devices, on a machine with an accelerator too
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
        **(extra_env or {}),
    }
    cmd = [
        sys.executable,
        "-m",
        "rnn_jax.train",
        *COMMON,
        "--run-dir",
        str(run_dir),
        "--data-dir",
        str(data_dir),
        *argv,
    ]
    if not wait:
        return subprocess.Popen(cmd, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def losses(run_dir):
    return [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def one_device(tmp_path_factory, data_dir):
    """Auto device choice with 4 devices present: the book's batch stays on one."""
    run = tmp_path_factory.mktemp("dp") / "one"
    train(run, data_dir)
    assert json.loads((run / "summary.json").read_text())["devices"] == 1
    return run


@pytest.fixture(scope="module")
def four_devices(tmp_path_factory, data_dir):
    run = tmp_path_factory.mktemp("dp") / "four"
    train(run, data_dir, "--devices", "4", "--epochs", "2")
    assert json.loads((run / "summary.json").read_text())["devices"] == 4
    return run


@pytest.mark.slow
def test_four_devices_train_like_one_and_resume_on_one(one_device, four_devices, tmp_path, data_dir):
    np.testing.assert_allclose(losses(four_devices), losses(one_device)[:2], rtol=2e-5)
    run = tmp_path / "run"
    shutil.copytree(four_devices, run)
    train(run, data_dir, "--resume", "--epochs", "3", "--devices", "1", devices=1)  # 4-device checkpoint, 1 device
    np.testing.assert_allclose(losses(run), losses(one_device), rtol=2e-5)


@pytest.mark.slow
def test_indivisible_batch_is_refused(tmp_path, data_dir):
    proc = train(tmp_path / "r", data_dir, "--devices", "3", check=False)
    assert proc.returncode == 2
    assert "batch_size 8 is not divisible by the 3 devices" in proc.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_of_two_devices_match_one_process_of_four(four_devices, tmp_path, data_dir):
    coordinator = f"127.0.0.1:{_free_port()}"
    procs = [
        train(
            tmp_path / "multi",
            data_dir,
            "--coordinator",
            coordinator,
            "--num-processes",
            "2",
            "--process-id",
            str(i),
            "--epochs",
            "2",
            "--tensorboard",
            devices=2,
            wait=False,
        )
        for i in range(2)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
    np.testing.assert_allclose(losses(tmp_path / "multi"), losses(four_devices), rtol=2e-5)
    assert json.loads((tmp_path / "multi" / "summary.json").read_text())["devices"] == 4
    events = list((tmp_path / "multi" / "tensorboard").iterdir())  # process 0's file only
    assert len(events) == 1 and events[0].name.endswith(f".{procs[0].pid}")


SWEEP = """
import dataclasses, json, sys, jax
from rnn_jax import data, sweep
from rnn_jax import experiments as experiments_lib
cfg = dataclasses.replace(experiments_lib.EXPERIMENTS["tiny"], epochs=2, max_tokens=800, predict_every=0)
tokens, vocab = data.load_corpus(sys.argv[1] + "/timemachine.txt", cfg.max_tokens)
print(json.dumps({"devices": jax.device_count(), "curves": [r["curve"] for r in sweep.run_vmap(cfg, [0, 1, 2, 3],
                                                                                                tokens, vocab)]}))
"""


@pytest.mark.slow
def test_vmapped_seeds_shard_over_devices(data_dir):
    """Four seeds sharded over four devices give the curves of the same sweep on this process's one device."""
    import jax

    from rnn_jax import data, sweep
    from rnn_jax import experiments as experiments_lib

    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    proc = subprocess.run(
        [sys.executable, "-c", SWEEP, str(data_dir)], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    sharded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert sharded["devices"] == 4 and jax.device_count() == 1
    cfg = dataclasses.replace(
        experiments_lib.EXPERIMENTS["tiny"], epochs=2, max_tokens=800, predict_every=0
    )  # as SWEEP's
    tokens, vocab = data.load_corpus(data_dir / "timemachine.txt", cfg.max_tokens)
    one = [r["curve"] for r in sweep.run_vmap(cfg, [0, 1, 2, 3], tokens, vocab)]
    np.testing.assert_allclose(sharded["curves"], one, rtol=2e-5)
