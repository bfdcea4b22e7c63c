import json
import os
import subprocess
import sys

import pytest

from rnn_jax import bench

FAKE_PEER = """import json, sys
args = sys.argv[1:]
with open(args[args.index("--json-out") + 1], "w") as f:
    json.dump({"tokens_per_s_excl_first": 1000.0 * (1 + ("--concise" in args)), "final_perplexity": 1.5,
               "argv": args}, f)
"""


def tiny(data_dir, tmp_path, *flags):
    """Runs the benchmark on a tiny model, one repetition of one epoch; returns (stdout, the JSON report)."""
    out = tmp_path / "bench.json"
    assert bench.main(["--data-dir", str(data_dir), "--quick", "--reps", "1", "--epochs", "1", "--hidden", "32",
                       "--limit-steps", "20", "--json-out", str(out), *flags]) == 0
    return json.loads(out.read_text())


@pytest.fixture
def fake_peer(tmp_path):
    path = tmp_path / "fake_peer.py"
    path.write_text(FAKE_PEER)
    return ["--peer-python", sys.executable, "--peer-script", str(path)]


def check_spread(s):
    assert 0 < s["min"] <= s["median"] <= s["max"] and len(s["reps"]) == 1


def test_table_and_json_of_the_cheap_sections(data_dir, tmp_path, capsys):
    report = tiny(data_dir, tmp_path, "--sections", "throughput,compile,generation,scaling,devices", "--variants",
                  "fused-epoch", "--gen-chars", "20", "--scale-hidden", "16", "--scale-steps", "35,350")
    printed = capsys.readouterr().out
    assert "peers skipped" in printed and "throughput" in printed and "fused-epoch seq" in printed
    rows = report["throughput"]["rows"]
    assert [r["name"] for r in rows] == ["fused-epoch seq"]
    for r in rows:
        check_spread(r["tokens_per_s"])
        assert r["compile_s"] > 0 and r["xla_mb"] > 0 and r["peak_rss_mb"] > 0 and r["fraction_of_fp32_limit"] > 0
        assert r["ratio_to_torch_scratch"] is None
    assert report["throughput"]["limit"]["gflop_per_s"]["median"] > 0
    assert report["throughput"]["limit"]["flop_per_token"] == 6 * 32 * (32 + 28)
    assert [(r["name"], r["num_steps"]) for r in report["compile"]] == [("fused-epoch", 35), ("fused-epoch", 350)]
    assert all(r["compile_s"] > 0 for r in report["compile"])
    gen = report["generation"]
    assert len(gen["rows"]) == 3 and gen["scan_over_loop"] > 0
    for r in gen["rows"]:
        check_spread(r["chars_per_s"])
    assert [(r["hidden"], r["num_steps"]) for r in report["scaling"]] == [(16, 35), (16, 350)]
    for r in report["scaling"]:
        assert r["tokens_per_s"] > 0 and r["gflop_per_s"] > 0 and r["xla_temp_mb"] > 0
    assert report["scaling"][1]["xla_temp_mb"] > report["scaling"][0]["xla_temp_mb"]  # 10x the steps
    assert [(r["devices"], r["batch_size"], r["speedup"]) for r in report["devices"]["rows"]] == [(1, 32, 1.0)]
    assert set(report["load"]) == {"throughput", "compile", "generation", "scaling", "devices"}


def test_device_scaling_over_four_host_devices(data_dir, tmp_path):
    out = tmp_path / "bench.json"
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    proc = subprocess.run([sys.executable, "-m", "rnn_jax.bench", "--data-dir", str(data_dir), "--quick", "--epochs",
                           "1", "--hidden", "32", "--sections", "devices", "--json-out", str(out)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out.read_text())["devices"]["rows"]
    assert [(r["devices"], r["batch_size"]) for r in rows] == [(1, 128), (2, 128), (4, 128)]
    assert all(r["tokens_per_s"] > 0 for r in rows) and "data parallel over devices" in proc.stdout


def test_peers_run_with_the_books_flags_and_set_the_ratio(data_dir, tmp_path, fake_peer, capsys):
    report = tiny(data_dir, tmp_path, "--sections", "throughput", "--variants", "fused-epoch",
                  "--samplings", "seq,random", *fake_peer)
    rows = {r["name"]: r for r in report["throughput"]["rows"]}
    assert list(rows) == ["fused-epoch seq", "torch-scratch seq", "torch-nn.RNN seq",
                          "fused-epoch random", "torch-scratch random", "torch-nn.RNN random"]
    assert rows["torch-scratch seq"]["ratio_to_torch_scratch"] == 1.0
    assert rows["torch-nn.RNN random"]["ratio_to_torch_scratch"] == 2.0
    ours = rows["fused-epoch random"]
    assert ours["ratio_to_torch_scratch"] == pytest.approx(ours["tokens_per_s"]["median"] / 1000.0)
    assert "peers skipped" not in capsys.readouterr().out


def test_contention_alternates_quiet_and_busy_runs(data_dir, tmp_path, fake_peer, monkeypatch):
    pinned = []
    monkeypatch.setattr(bench, "jax_worker", lambda args, corpus, cpus: pinned.append(cpus) or 100.0 * len(cpus))
    report = tiny(data_dir, tmp_path, "--sections", "contention", *fake_peer)
    rows = report["contention"]["rows"]
    if not rows:
        pytest.skip(report["contention"]["note"])
    names = [(r["name"].split(",")[0], r["busy_core"] is not None) for r in rows]
    assert names == [(n, busy) for n in ("jax fused-epoch",) * 2 + ("torch-scratch",) * 2 for busy in (False, True)]
    assert [len(c) for c in pinned] == [len(report["cpus"])] * 2 + [1] * 2
    for r in rows:
        check_spread(r["tokens_per_s"])
        assert r["vs_quiet"] == 1.0  # the fakes do not notice the busy core


@pytest.mark.slow
def test_pinned_worker_process_measures_on_one_core(data_dir):
    args = bench.parse_args(["--epochs", "1", "--hidden", "16"])
    assert bench.jax_worker(args, data_dir / "timemachine.txt", sorted(os.sched_getaffinity(0))[:1]) > 0


def test_unknown_section_is_an_error():
    with pytest.raises(SystemExit, match="unknown section"):
        bench.parse_args(["--sections", "throughput,speed"])
