import contextlib
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rnn_jax import bench, config, corpora, log
from rnn_jax.bench import common, compare, contention, devices, generation, report, throughput, variants

# Checks the book's flags, then reports 1000 tokens/s, x2 for nn.RNN, /2 for random sampling, x threads.
FAKE_PEER = """import json, sys
args = sys.argv[1:]
flag = lambda name: args[args.index(name) + 1] if name in args else None
if (flag("--hidden"), flag("--predict-every"), flag("--epochs")) != ("8", "0", "2") or \\
        not flag("--data").endswith("timemachine.txt"):
    sys.exit(f"unexpected flags {args}")
rate = 1000.0 * (1 + ("--concise" in args)) / (1 + ("--random" in args)) * int(flag("--threads") or 1)
with open(flag("--json-out"), "w") as f:
    json.dump({"tokens_per_s_excl_first": rate, "final_perplexity": 1.5}, f)
"""


@pytest.fixture
def fake_peer(tmp_path):
    path = tmp_path / "fake_peer.py"
    path.write_text(FAKE_PEER)
    return ["--peer-python", sys.executable, "--peer-script", str(path)]


def quick_args(*flags):
    return bench.parse_args(["--quick", "--epochs", "1", "--hidden", "8", *flags])


def test_flop_per_token_is_the_hand_count():
    H, V = 3, 2
    forward = 2 * H * H + 2 * H * V  # h W_hh and h W_hq; x W_xh is a row gather
    assert variants.flop_per_token(H, V) == forward + 2 * forward == 90
    assert variants.flop_per_token(512, 28) == 1_658_880  # the figure the package docstring quotes


def test_flop_per_token_of_the_gated_cells_and_stacks_is_the_hand_count():
    H, V = 3, 2
    gru = 2 * H * 2 * H + 2 * H * H + 2 * H * V  # forward: h [W_hz|W_hr], (r*h) W_hh, h W_hq
    lstm = 2 * H * 4 * H + 2 * H * V  # forward: h [W_hi|W_hf|W_ho|W_hc], h W_hq
    assert variants.flop_per_token(H, V, "gru") == 3 * gru  # backward: twice the forward
    assert variants.flop_per_token(H, V, "lstm") == 3 * lstm
    upper = 2 * (2 * H * 4 * H)  # layer 2: its input product h1 W_x. and its recurrent product, 4 gates each
    assert variants.flop_per_token(H, V, "lstm", num_layers=2) == 3 * (lstm + upper)


@pytest.mark.slow
@pytest.mark.parametrize("cell,products,dtype", [("rnn", 1, "float32"), ("gru", 3, "float32"), ("lstm", 4, "bfloat16")])
def test_matmul_limit_of_a_cell_counts_its_recurrent_products(cell, products, dtype):
    clock = iter([1.0, 1.25]).__next__
    run = throughput.matmul_limit(4, batch_size=2, steps=5, clock=clock, cell=cell, dtype=dtype)
    assert run() == pytest.approx(2 * 2 * 4 * 4 * products * 5 / 0.25 / 1e9)
    operands = "bf16" if dtype == "bfloat16" else "f32"
    assert f"tensor<2x4x{operands}>" in run.program() and ("bf16" in run.program()) == (dtype == "bfloat16")


def test_a_cells_rows_take_ratios_to_its_own_peers():
    row = lambda reps: {"reps": reps, "rss": [1.0] * len(reps), "other": [None] * len(reps)}
    rows = {
        "gru fused-epoch seq": row([300.0]),
        "gru torch-scratch seq": row([100.0]),
        "gru torch-nn.GRU seq": row([200.0]),
    }
    got = {r["name"]: r for r in throughput.summarise(rows, gflops=[1.0], flop=1000, cell="gru")["rows"]}
    assert (
        got["gru fused-epoch seq"]["ratio_to_torch_scratch"],
        got["gru fused-epoch seq"]["ratio_to_torch_fused"],
    ) == (3.0, 1.5)
    assert throughput.peers("lstm") == {
        "lstm torch-scratch": ["--cell", "lstm"],
        "lstm torch-nn.LSTM": ["--cell", "lstm", "--concise"],
    }


def test_spread_and_median_skip_nothing_but_none():
    assert common.spread([3.0, 1.0, 10.0, 2.0]) == {
        "median": 2.5,
        "min": 1.0,
        "max": 10.0,
        "reps": [3.0, 1.0, 10.0, 2.0],
    }
    assert common.median_or_none([None, 4.0, None, 2.0, 9.0]) == 4.0
    assert common.median_or_none([None, None]) is None


def test_busy_seconds_count_user_nice_system_irq_softirq():
    line = "cpu  100 20 30 1000 50 5 5 7 0 0"  # user nice system idle iowait irq softirq steal guest guest_nice
    assert common.busy_seconds(line, ticks_per_s=100) == pytest.approx((100 + 20 + 30 + 5 + 5) / 100)


def test_measured_counts_the_cores_other_processes_kept_busy():
    cpu = iter([(10.0, 1.0), (14.0, 2.0)]).__next__  # (machine busy s, ours) before and after
    clock = iter([100.0, 102.0]).__next__
    assert common.measured(lambda: "result", read_cpu=cpu, clock=clock) == ("result", (14 - 10 - (2 - 1)) / 2)
    cpu = iter([(10.0, 1.0), (14.0, 2.0)]).__next__
    assert common.measured(lambda: 7, read_cpu=cpu, clock=iter([0.0, 0.4]).__next__) == (7, None)  # ticks too coarse


def test_throughput_summary_takes_ratios_of_medians_to_torch_and_to_the_limit():
    row = lambda reps, **kw: {
        "reps": reps,
        "rss": [5.0, 9.0, 7.0][: len(reps)],
        "other": [None, 0.25, 0.75][: len(reps)],
        **kw,
    }
    rows = {
        "fused-epoch seq": row([300.0, 100.0, 200.0], compile_s=1.5, xla_mb=2.0),
        "torch-scratch seq": row([50.0, 100.0, 150.0]),
        "torch-nn.RNN seq": row([400.0]),
        "fused-epoch random": row([400.0]),
        "torch-scratch random": row([80.0]),
    }
    out = throughput.summarise(rows, gflops=[2.0, 6.0, 4.0], flop=1000)
    assert out["limit"] == {"gflop_per_s": common.spread([2.0, 6.0, 4.0]), "tokens_per_s": 4e6, "flop_per_token": 1000}
    got = {r["name"]: r for r in out["rows"]}
    assert list(got) == list(rows)
    assert {k: r["ratio_to_torch_scratch"] for k, r in got.items()} == {
        "fused-epoch seq": 2.0,
        "torch-scratch seq": 1.0,
        "torch-nn.RNN seq": 4.0,
        "fused-epoch random": 5.0,
        "torch-scratch random": 1.0,
    }
    ours = got["fused-epoch seq"]
    assert ours["fraction_of_fp32_limit"] == pytest.approx(200 / 4e6)
    assert (ours["peak_rss_mb"], ours["other_cores"], ours["compile_s"], ours["xla_mb"]) == (9.0, 0.5, 1.5, 2.0)
    assert got["torch-scratch random"]["other_cores"] is None and got["torch-scratch seq"]["compile_s"] is None


def test_throughput_sets_the_ratio_to_a_peer_from_the_measured_rate(data_dir, fake_peer, monkeypatch):
    xla = {"argument": 2**20, "output": 2**20, "temp": 2**21, "alias": 2**20}
    monkeypatch.setattr(
        throughput, "build", lambda cfg, vocab_size, batches, per_step: (lambda epochs: 3000.0, 0.25, xla)
    )
    monkeypatch.setattr(throughput, "matmul_limit", lambda hidden, steps, cell: lambda: 2.0)  # GFLOP/s
    args = quick_args("--variants", "fused-epoch", "--samplings", "seq,random", "--reps", "2", *fake_peer)
    corpus = corpora.resolve_corpus(None, str(data_dir))
    out = throughput.throughput(args, corpus, None, "v" * 28)
    rows = {r["name"]: r for r in out["rows"]}
    assert list(rows) == [
        "fused-epoch seq",
        "torch-scratch seq",
        "torch-nn.RNN seq",
        "fused-epoch random",
        "torch-scratch random",
        "torch-nn.RNN random",
    ]
    assert rows["torch-nn.RNN seq"]["tokens_per_s"]["reps"] == [2000.0, 2000.0]
    assert {k: r["ratio_to_torch_scratch"] for k, r in rows.items()} == {
        "fused-epoch seq": 3.0,
        "torch-scratch seq": 1.0,
        "torch-nn.RNN seq": 2.0,
        "fused-epoch random": 6.0,
        "torch-scratch random": 1.0,
        "torch-nn.RNN random": 2.0,
    }
    assert out["limit"]["tokens_per_s"] == pytest.approx(2e9 / (6 * 8 * (8 + 28)))
    assert rows["fused-epoch seq"]["fraction_of_fp32_limit"] == pytest.approx(3000 * 6 * 8 * 36 / 2e9)
    assert (rows["fused-epoch seq"]["compile_s"], rows["fused-epoch seq"]["xla_mb"]) == (0.25, 3.0)


@pytest.mark.slow
def test_matmul_limit_counts_two_flop_per_multiply_add():
    clock = iter([1.0, 1.25]).__next__  # one timed chain of a quarter second
    run = throughput.matmul_limit(4, batch_size=2, steps=5, clock=clock)
    assert run() == pytest.approx(2 * 2 * 4 * 4 * 5 / 0.25 / 1e9)


def test_contention_ratio_is_busy_median_over_quiet_median():
    runs = {
        ("a", None): ([100.0, 300.0, 200.0], [None, None, 0.1]),
        ("a", 3): ([50.0, 150.0, 100.0], [0.9, 1.1, 1.0]),
        ("b", None): ([10.0], [None]),
        ("b", 3): ([40.0], [None]),
    }
    rows = contention.summarise(runs)
    assert [(r["name"], r["busy_core"], r["vs_quiet"], r["other_cores"]) for r in rows] == [
        ("a", None, 1.0, 0.1),
        ("a", 3, 0.5, 1.0),
        ("b", None, 1.0, None),
        ("b", 3, 4.0, None),
    ]
    assert rows[1]["tokens_per_s"] == common.spread([50.0, 150.0, 100.0])


def test_contention_alternates_quiet_and_busy_and_pins_the_workers(data_dir, fake_peer, monkeypatch):
    calls, busy = [], {"cpu": None}

    @contextlib.contextmanager
    def fake_busy_core(cpu):
        busy["cpu"] = cpu
        yield
        busy["cpu"] = None

    def fake_worker(args, corpus, cpus, cell):  # halves its rate while a core is busy
        calls.append((cpus, busy["cpu"], cell))
        return 100.0 * len(cpus) / (2 if busy["cpu"] is not None else 1)

    monkeypatch.setattr(contention, "usable_cpus", lambda: [0, 1, 2, 3])
    monkeypatch.setattr(contention, "busy_core", fake_busy_core)
    monkeypatch.setattr(contention, "jax_worker", fake_worker)
    args = quick_args("--contention-reps", "2", *fake_peer)
    out = contention.contention(args, corpora.resolve_corpus(None, str(data_dir)))
    assert out["note"] == "busy loop pinned to cpu 3"
    assert calls == [([0, 1, 2, 3], None, "rnn"), ([0, 1, 2, 3], 3, "rnn"), ([0], None, "rnn"), ([0], 3, "rnn")] * 2
    assert [(r["name"], r["busy_core"], r["tokens_per_s"]["median"], r["vs_quiet"]) for r in out["rows"]] == [
        ("jax fused-epoch, all 4 cores", None, 400.0, 1.0),
        ("jax fused-epoch, all 4 cores", 3, 200.0, 0.5),
        ("jax fused-epoch, pinned to cpu 0", None, 100.0, 1.0),
        ("jax fused-epoch, pinned to cpu 0", 3, 50.0, 0.5),
        ("torch-scratch, --threads 2", None, 2000.0, 1.0),
        ("torch-scratch, --threads 2", 3, 2000.0, 1.0),
        ("torch-scratch, --threads 1", None, 1000.0, 1.0),
        ("torch-scratch, --threads 1", 3, 1000.0, 1.0),
        ("torch-nn.RNN, --threads 2", None, 4000.0, 1.0),
        ("torch-nn.RNN, --threads 2", 3, 4000.0, 1.0),
        ("torch-nn.RNN, --threads 1", None, 2000.0, 1.0),
        ("torch-nn.RNN, --threads 1", 3, 2000.0, 1.0),
    ]


def test_contention_of_a_gated_cell_runs_its_worker_and_both_its_peers_on_two_threads_and_one(
    data_dir, fake_peer, monkeypatch
):
    workers, peer_flags = [], []
    monkeypatch.setattr(contention, "usable_cpus", lambda: [0, 1])
    monkeypatch.setattr(contention, "busy_core", lambda cpu: contextlib.nullcontext())
    monkeypatch.setattr(contention, "jax_worker", lambda args, corpus, cpus, cell: workers.append((cpus, cell)) or 9.0)
    monkeypatch.setattr(
        contention, "peer_tokens_per_s", lambda args, corpus, flags: (peer_flags.append(flags), 0) and (1.0, 0.0)
    )
    args = quick_args("--cells", "lstm", *fake_peer)
    out = contention.contention(args, corpora.resolve_corpus(None, str(data_dir)))
    assert [r["name"] for r in out["rows"] if r["busy_core"] is None] == [
        "lstm jax fused-epoch, all 2 cores",
        "lstm jax fused-epoch, pinned to cpu 0",
        "lstm torch-scratch, --threads 2",
        "lstm torch-scratch, --threads 1",
        "lstm torch-nn.LSTM, --threads 2",
        "lstm torch-nn.LSTM, --threads 1",
    ]
    assert workers == [([0, 1], "lstm"), ([0, 1], "lstm"), ([0], "lstm"), ([0], "lstm")]
    assert (
        peer_flags
        == [["--cell", "lstm", "--threads", "2"]] * 2
        + [["--cell", "lstm", "--threads", "1"]] * 2
        + [["--cell", "lstm", "--concise", "--threads", "2"]] * 2
        + [["--cell", "lstm", "--concise", "--threads", "1"]] * 2
    )


def test_generation_summary_compares_the_scan_with_the_loop():
    rates = {"scan": [10.0, 30.0, 20.0], "loop": [4.0, 6.0, 5.0], "batch": [1.0]}
    first = {"scan": ("abc", 0.5), "loop": ("abc", 0.1), "batch": (None, 0.2)}
    out = generation.summarise(20, first, rates)
    assert (out["num_chars"], out["scan_over_loop"], out["same_text"]) == (20, 4.0, True)
    assert [(r["name"], r["chars_per_s"]["median"], r["first_call_s"]) for r in out["rows"]] == [
        ("scan", 20.0, 0.5),
        ("loop", 5.0, 0.1),
        ("batch", 1.0, 0.2),
    ]
    assert not generation.summarise(20, {**first, "loop": ("abd", 0.1)}, rates)["same_text"]


def test_device_counts_and_speedups():
    assert devices.device_counts(1) == [1]
    assert devices.device_counts(6) == [1, 2, 4]
    assert devices.device_counts(200) == [1, 2, 4, 8, 16, 32, 64, 128]
    rows = devices.speedups([{"devices": n, "tokens_per_s": r} for n, r in ((1, 100.0), (2, 180.0), (4, 300.0))])
    assert [r["speedup"] for r in rows] == [1.0, 1.8, 3.0]


def test_print_table_aligns_columns_and_prints_missing_values_as_a_dash(capsys):
    rows = [{"name": "a", "tok": {"median": 1234.4}, "ratio": 0.5}, {"name": "long name", "tok": {}, "ratio": None}]
    report.print_table(
        "title", rows, [("variant", "name", ""), ("median", "tok.median", ",.0f"), ("ratio", "ratio", ".2f")]
    )
    assert capsys.readouterr().out == (
        "\ntitle\nvariant    median  ratio\na           1,234   0.50\nlong name       -      -\n"
    )


def test_quick_is_a_smaller_run_and_given_flags_win():
    quick, full = bench.parse_args(["--quick"]), bench.parse_args(["--reps", "7", "--e2e"])
    assert set(quick.samplings) < set(full.samplings) and set(quick.scale_hidden) < set(full.scale_hidden)
    for name in ("epochs", "contention_reps", "limit_steps"):
        assert getattr(quick, name) < getattr(full, name), name
    assert quick.reps < bench.parse_args([]).reps
    assert full.reps == 7 and full.contention_reps == min(7, 3)  # contention follows --reps, capped
    assert bench.parse_args(["--quick", "--epochs", "9"]).epochs == 9
    assert "e2e" in full.sections and "e2e" not in quick.sections
    with pytest.raises(SystemExit, match="unknown section"):
        bench.parse_args(["--sections", "throughput,speed"])


@pytest.mark.slow
def test_cli_smoke_run_of_the_cheap_sections(data_dir, tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert (
        bench.main(
            [
                "--data-dir",
                str(data_dir),
                "--quick",
                "--reps",
                "1",
                "--epochs",
                "1",
                "--hidden",
                "32",
                "--limit-steps",
                "20",
                "--out",
                str(tmp_path / "bench"),
                "--sections",
                "throughput,compile,generation,scaling,devices",
                "--variants",
                "fused-epoch",
                "--gen-chars",
                "20",
                "--scale-hidden",
                "16",
                "--scale-steps",
                "35,350",
            ]
        )
        == 0
    )
    printed, got = capsys.readouterr().out, json.loads(out.read_text())
    assert "peers skipped" in printed and "fused-epoch seq" in printed and "one scan / the book's loop" in printed
    lim, (row,) = got["throughput"]["limit"], got["throughput"]["rows"]
    assert lim["tokens_per_s"] == pytest.approx(lim["gflop_per_s"]["median"] * 1e9 / (6 * 32 * (32 + 28)))
    assert row["fraction_of_fp32_limit"] == pytest.approx(row["tokens_per_s"]["median"] / lim["tokens_per_s"])
    assert [(r["name"], r["num_steps"]) for r in got["compile"]] == [("fused-epoch", 35), ("fused-epoch", 350)]
    assert got["generation"]["same_text"]  # the scan and the book's loop agree on greedy text
    for r in got["scaling"]:
        assert r["gflop_per_s"] == pytest.approx(r["tokens_per_s"] * 6 * 16 * (16 + 28) / 1e9)
        assert r["xla_mb"] == pytest.approx(
            r["xla_argument_mb"] + r["xla_output_mb"] + r["xla_temp_mb"] - r["xla_alias_mb"]
        )
    assert [(r["hidden"], r["num_steps"]) for r in got["scaling"]] == [(16, 35), (16, 350)]
    assert [(r["devices"], r["batch_size"], r["speedup"]) for r in got["devices"]["rows"]] == [(1, 32, 1.0)]
    assert list(got["load"]) == ["throughput", "compile", "generation", "scaling", "devices"]
    # the text beside the JSON is what was printed, and both say which host the figures come from
    first = printed.splitlines()[1]  # after the note on the peers
    assert (tmp_path / "bench.txt").read_text() in printed and first.startswith(f"host: {log.cpu_info()['cpu_model']}")
    assert f"fp32 limit {lim['gflop_per_s']['median']:.0f} GFLOP/s" in first
    assert got["environment"]["cpu_model"] == log.cpu_info()["cpu_model"] and "xla_flags" in got
    # two reports side by side: one row per variant and figure, a column per report
    assert compare.main([str(out), str(out)]) == 0
    table = capsys.readouterr().out
    assert table.count(first.split(";")[0]) == 2 and "throughput by host" in table
    ratio = f"{row['fraction_of_fp32_limit']:.2f}"
    assert any(
        ln.split()[:3] == ["fused-epoch", "seq", "of"] and ln.split()[-2:] == [ratio, ratio]
        for ln in table.splitlines()
    )
    assert compare.main([str(tmp_path / "bench.txt")]) == 2  # not a report: said, not a traceback
    assert "not a readable benchmark report" in capsys.readouterr().err


@pytest.mark.slow
def test_device_scaling_over_four_host_devices(data_dir, tmp_path):
    out = tmp_path / "bench.json"
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "rnn_jax.bench",
            "--data-dir",
            str(data_dir),
            "--quick",
            "--epochs",
            "1",
            "--hidden",
            "32",
            "--sections",
            "devices",
            "--json-out",
            str(out),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out.read_text())["devices"]["rows"]
    assert [(r["devices"], r["batch_size"]) for r in rows] == [(1, 128), (2, 128), (4, 128)]
    assert [r["speedup"] for r in rows] == pytest.approx([r["tokens_per_s"] / rows[0]["tokens_per_s"] for r in rows])
    assert "data parallel over devices (4 cpu device(s); global batch 128)" in proc.stdout


@pytest.mark.slow
def test_pinned_worker_process_runs_on_the_cpus_it_was_given(data_dir):
    last = sorted(os.sched_getaffinity(0))[-1:]
    out = contention.worker_report(quick_args(), data_dir / "timemachine.txt", last, "gru")
    assert (
        out["cpus"] == last
        and out["tokens_per_s"] > 0
        and out["params"] == sorted([f"{w}{g}" for w in ("W_x", "W_h", "b_") for g in "zrh"] + ["W_hq", "b_q"])
    )


def test_the_environment_names_the_host_cpu():
    from rnn_jax import log

    env = log.environment()
    assert env["cpu_count"] == os.cpu_count() and env["cpu_model"]
    if Path("/sys/devices/system/cpu/cpu0/cache").is_dir():
        assert set(env["cache"]) >= {"L1", "L2"} and all(v[:-1].isdigit() for v in env["cache"].values())


@pytest.mark.slow
def test_the_recipe_section_times_both_dtypes_beside_the_torch_peer(tmp_path, capsys):
    import argparse

    from rnn_jax.bench import recipe

    peer = tmp_path / "peer"
    peer.write_text(
        "#!/bin/sh\necho 'torch nn.LSTM float32 threads 2: 1,000 tokens/s'\n"
        "echo 'torch nn.LSTM bfloat16 threads 2: 2,000.5 tokens/s'\n"
    )
    peer.chmod(0o755)
    args = argparse.Namespace(
        hidden=16,
        reps=2,
        epochs=1,
        limit_steps=20,
        peer_python=str(peer),
        peer_threads=None,
        peer_script=tmp_path / "d2l_torch_ref.py",  # the recipe's peer is the one beside it
    )
    r = recipe.recipe(args)
    rows = {row["name"]: row for row in r["rows"]}
    assert set(rows) == {"recipe float32", "recipe bfloat16"}
    f32, bf16 = rows["recipe float32"], rows["recipe bfloat16"]
    assert f32["torch_tokens_per_s"]["reps"] == [1000.0, 1000.0]
    assert bf16["ratio_to_torch"] == pytest.approx(bf16["tokens_per_s"]["median"] / 2000.5)
    assert f32["fraction_of_fp32_limit"] == pytest.approx(f32["tokens_per_s"]["median"] / r["limit"]["tokens_per_s"])
    bf16_limit = r["limit_bfloat16"]["tokens_per_s"]
    assert bf16["fraction_of_own_limit"] == pytest.approx(bf16["tokens_per_s"]["median"] / bf16_limit)
    assert f32["fraction_of_own_limit"] == f32["fraction_of_fp32_limit"]
    assert len(r["limit_bfloat16"]["gflop_per_s"]["reps"]) == 2  # measured once per repetition, as float32's
    assert r["limit"]["flop_per_token"] == variants.flop_per_token(16, 66, "lstm")
    report.print_recipe({"recipe": r, "args": {"reps": 2}})
    printed = capsys.readouterr().out
    assert "recipe bfloat16" in printed and "of own dtype's limit" in printed and "bf16 limit:" in printed
    peer.write_text("#!/bin/sh\necho 'no figures'\n")
    with pytest.raises(common.ChildFailed, match="printed no tokens/s for"):
        recipe.peer_tokens_per_s(args)


def test_the_recurrences_section_sets_each_linear_cell_at_the_lstms_parameter_count():
    from rnn_jax.bench import recurrences
    from rnn_jax.cells import CELLS

    cfgs = recurrences.configs(hidden=512)
    reference = recurrences.parameter_count(cfgs["lstm 1x512"])
    linear = [c for c, core in CELLS.items() if core.linear is not None]
    assert {cfg.cell for cfg in cfgs.values()} == {"lstm", *linear}
    for name, cfg in cfgs.items():
        assert abs(recurrences.parameter_count(cfg) - reference) / reference < 0.05, name
        if cfg.block == "residual":  # the nearest multiple of 8: one step either way is farther
            for other in (cfg.hidden - 8, cfg.hidden + 8):
                wider = dataclasses.replace(cfg, hidden=other)
                far = abs(recurrences.parameter_count(wider) - reference)
                assert far >= abs(recurrences.parameter_count(cfg) - reference), (name, other)
    assert {cfg.scan for cfg in cfgs.values() if cfg.cell in linear} == {"linear", "associative"}
    assert all(
        cfg.weight_drop == 0 and cfg.forget_bias == (1.0 if CELLS[cfg.cell].forget_gate else 0.0)
        for cfg in cfgs.values()
        if cfg.cell in linear
    )


@pytest.mark.slow
def test_the_recurrences_section_times_every_row_against_the_lstm(capsys, monkeypatch):
    import argparse

    from rnn_jax.bench import recurrences

    small = {k: v for k, v in recurrences.configs(hidden=16).items() if v.cell in ("lstm", "mingru")}
    monkeypatch.setattr(recurrences, "configs", lambda hidden: small)
    r = recurrences.recurrences(argparse.Namespace(hidden=16, reps=2, epochs=1))
    rows = {row["name"]: row for row in r["rows"]}
    assert rows["lstm 1x16"]["ratio_to_lstm"] == 1.0
    for row in rows.values():
        assert len(row["tokens_per_s"]["reps"]) == 2 and row["tokens_per_s"]["median"] > 0
        assert row["gflop_per_s"] == pytest.approx(row["tokens_per_s"]["median"] * row["flop_per_token"] / 1e9)
        assert row["fraction_of_dense_limit"] == pytest.approx(row["gflop_per_s"] / r["limit"]["gflop_per_s"]["median"])
    report.print_recurrences({"recurrences": r, "args": {"reps": 2}})
    out = capsys.readouterr().out
    assert set(rows) == set(small) and "mingru residual" in out and "associative" in out


def test_the_shakespeare_candidates_of_each_family_have_the_widths_of_the_benchs_equal_parameter_count():
    from experiments import shakespeare_levers
    from rnn_jax.bench import recurrences

    bench = {
        (cfg.cell, cfg.hidden)
        for cfg in recurrences.configs(hidden=512).values()
        if cfg.block == "residual" and cfg.scan == "linear"
    }
    for name, overrides in shakespeare_levers.FAMILIES.items():
        cfg = shakespeare_levers.lever_config(overrides, 8)  # validated: options a cell cannot take are off
        assert (cfg.cell, cfg.hidden) in bench, name
        assert cfg.weight_drop == recurrences.cell_config(shakespeare_levers.BASE, cfg.cell).weight_drop


def test_the_time_machine_recurrences_have_the_parameter_count_of_its_lstm():
    from experiments import heldout_grid
    from rnn_jax.bench import recurrences

    lstm = dataclasses.replace(heldout_grid.BASE, **heldout_grid.FAMILIES["lstm-1x256"][0])
    target = recurrences.parameter_count(lstm, 28)
    for name, (fam, regs) in heldout_grid.LINEAR_FAMILIES.items():
        cfg = config.validate(dataclasses.replace(heldout_grid.BASE, **fam))
        assert cfg.block == "residual" and name == f"{cfg.cell}-3x{cfg.hidden}"
        assert cfg.hidden == recurrences.equal_width(cfg, target, vocab_size=28), name
        for reg in regs.values():
            config.validate(dataclasses.replace(cfg, **reg))
