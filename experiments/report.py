"""Regenerates experiments/RESULTS.md, its figures and the README's results table from experiments/results/*.json.

python experiments/report.py        # seconds; no training

Every record read is checked first (one line names a file that is not one), and none is published when it lost
rows against its version at git HEAD, unless --allow-lost-rows; the lost rows are named.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from experiments import classes
from experiments.common import HERE, RESULTS, RecordError, load, lost_rows, read_record
from rnn_jax import data
from rnn_jax.cells import CELLS
from rnn_jax.files import write_atomic

FIGURES = RESULTS / "figures"
README = HERE.parent / "README.md"
README_START, README_END = "<!-- results:start -->", "<!-- results:end -->"
# The perplexities the book prints after 500 epochs (8.5: sequential and random sampling; 9.1-9.3), for comparison.
BOOK = {"seq": "1.0", "random": "1.3-1.5", "book_random": "1.3-1.4", "gru": "1.1", "lstm": "1.1", "deep": "1.0"}
BOOK_RUNS = {
    "seq": "8.5, sequential partitioning",
    "random": "8.5, a fresh model on random windows",
    "book_random": "8.5, `seq` then the state reset (the book's code)",
    "gru": "9.1, GRU, 256 units",
    "lstm": "9.2, LSTM, 256 units",
    "deep": "9.3, two LSTM layers, lr 2",
}


def loaded(name: str) -> dict:
    """load() of a record the caller has seen exists."""
    rec = load(name)
    assert rec is not None, name
    return rec


def pm(stat: dict | None, digits: int = 3) -> str:
    if not stat:
        return "-"
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def best_val(record: dict) -> dict | None:
    """Mean ± std over seeds of the lowest held-out perplexity on each seed's curve, and the mean epoch."""
    best = [
        min(r["val_curve"], key=lambda ev: ev[1])
        for r in record["seeds"]
        if r["diverged_epoch"] is None and r["val_curve"]
    ]
    if not best:
        return None
    vals = [b[1] for b in best]
    return {
        "mean": float(np.mean(vals)),
        "std": float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0,
        "epoch": float(np.mean([b[0] for b in best])),
    }


def at_epoch(record: dict, epoch: int) -> dict | None:
    vals = [r["curve"][epoch - 1] for r in record["seeds"] if len(r["curve"]) >= epoch]
    if not vals:
        return None
    return {"mean": float(np.mean(vals)), "std": float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0}


def table(names: list[str]) -> list[str]:
    lines = [
        "| configuration | epochs | train perplexity | held-out perplexity (final) | best held-out (epoch) "
        "| tokens/s | diverged (seed, epoch) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in names:
        rec = load(name)
        if rec is None:
            continue
        s, best = rec["summary"], best_val(rec)
        best_text = f"{best['mean']:.3f} ± {best['std']:.3f} ({best['epoch']:.0f})" if best else "-"
        tps = f"{s['tokens_per_sec']['mean']:,.0f}" if "tokens_per_sec" in s else "-"
        diverged = ", ".join(f"({a}, {b})" for a, b in s["diverged"]) or "none"
        lines.append(
            f"| `{name}` | {rec['config']['epochs']} | {pm(s.get('perplexity'))} | "
            f"{pm(s.get('val_perplexity'))} | {best_text} | {tps} | {diverged} |"
        )
    return lines


def curves(names: list[str], path: Path, title: str) -> str | None:
    """Mean training perplexity per epoch with the seeds' min-max band, log scale."""
    fig, ax = plt.subplots(figsize=(6.4, 3.8), dpi=110)
    for name in names:
        rec = load(name)
        if rec is None:
            continue
        runs = [r["curve"] for r in rec["seeds"] if r["curve"] and r["diverged_epoch"] is None]
        n = min(len(c) for c in runs) if runs else 0
        color = None
        if n:
            arr = np.array([c[:n] for c in runs])
            x = np.arange(1, n + 1)
            (line,) = ax.plot(x, arr.mean(0), label=f"{name} ({len(runs)} seeds)")
            ax.fill_between(x, arr.min(0), arr.max(0), color=line.get_color(), alpha=0.2)
            color = line.get_color()
        for r in rec["seeds"]:  # a diverged seed: its curve up to the divergence, marked with an x
            if r["diverged_epoch"] is not None and r["curve"]:
                e = min(r["diverged_epoch"], len(r["curve"]))
                (line,) = ax.plot(
                    np.arange(1, e + 1),
                    r["curve"][:e],
                    "--",
                    lw=0.8,
                    color=color,
                    label=f"{name} seed {r['seed']} (diverged)",
                )
                ax.plot([e], [r["curve"][e - 1]], "x", color=line.get_color())
    if not ax.lines:
        plt.close(fig)
        return None
    return save_figure(fig, ax, path, title, "training perplexity")


def save_figure(fig, ax, path: Path, title: str, ylabel: str, legend_size=None) -> str:
    """Log-scale axes, legend, PNG under results/figures; returns the Markdown that shows it."""
    ax.set(xlabel="epoch", ylabel=ylabel, yscale="log", title=title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=legend_size)
    fig.tight_layout()
    FIGURES.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return f"![{title}]({path.relative_to(HERE)})"


def val_curves(names: list[str], path: Path, title: str) -> str:
    """Mean held-out perplexity against epoch for each configuration (seeds that did not diverge)."""
    fig, ax = plt.subplots(figsize=(6.4, 3.8), dpi=110)
    for name in names:
        runs = [r["val_curve"] for r in loaded(name)["seeds"] if r["diverged_epoch"] is None and r["val_curve"]]
        if runs:
            n = min(len(c) for c in runs)
            arr = np.array([[v for _, v in c[:n]] for c in runs])
            ax.plot([e for e, _ in runs[0][:n]], arr.mean(0), marker=".", label=name.removeprefix("hp_"))
    return save_figure(fig, ax, path, title, "held-out perplexity", legend_size=8)


def mean_of(name: str, key: str = "perplexity") -> float:
    rec = load(name)
    return rec["summary"][key]["mean"] if rec and key in rec["summary"] else math.nan


def diverged(name: str) -> bool:
    rec = load(name)
    return bool(rec and rec["summary"]["diverged"])


def versus(a: str, b: str) -> str:
    """'lower than' / 'higher than' / 'level with' by final perplexity, level when within one std of each."""
    ra, rb = load(a), load(b)
    if not ra or not rb or "perplexity" not in ra["summary"] or "perplexity" not in rb["summary"]:
        return "not comparable with"
    x, y = ra["summary"]["perplexity"], rb["summary"]["perplexity"]
    if min(x["n"], y["n"]) < 2:
        return "from a single surviving seed, against"
    if abs(x["mean"] - y["mean"]) <= x["std"] + y["std"]:
        return "level with (within one standard deviation of)"
    return "lower than" if x["mean"] < y["mean"] else "higher than"


def diverged_text(name: str) -> str:
    rec = load(name)
    if rec is None:
        return "not run"
    d = rec["summary"]["diverged"]
    return f"{len(d)} of {rec['summary']['seeds']} seeds diverged" + (
        f" (at epochs {', '.join(str(e) for _, e in d)})" if d else ""
    )


def section(title: str, names: list[str], fig: str, answer: str) -> list[str]:
    """A table, the curves and the answer; nothing when the experiment it is about (the last name) has no record."""
    if load(names[-1]) is None:
        return []
    out = [f"## {title}", ""] + table(names) + [""]
    img = curves(names, FIGURES / f"{fig}.png", title)
    if img:
        out += [img, ""]
    return out + [answer, ""]


def git(cwd: Path, *args: str) -> str | None:
    """stdout of a git command in `cwd`, None when it fails (no git, not a checkout, no such object)."""
    try:
        run = subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return run.stdout if run.returncode == 0 else None


def committed_records(results: Path) -> dict[str, dict]:
    """{file name: record} of the results/*.json at git HEAD (none outside a checkout; unparseable ones left out)."""
    top = git(results, "rev-parse", "--show-toplevel") if results.is_dir() else None
    if not top:
        return {}
    rel = results.resolve().relative_to(Path(top.strip()).resolve()).as_posix()
    names = (git(Path(top.strip()), "ls-tree", "--name-only", "HEAD", f"{rel}/") or "").splitlines()
    out = {}
    for name in (n for n in names if n.endswith(".json")):
        try:
            out[Path(name).name] = json.loads(git(Path(top.strip()), "show", f"HEAD:{name}") or "")
        except json.JSONDecodeError:
            continue
    return out


def check_inputs(results: Path) -> list[str]:
    """Reads back every record (RecordError names one that is not a record) and returns what each lost against
    git HEAD: 'seq.json (seeds: seed=2)', 'heldout.json (the whole record)'."""
    on_disk = {p.name: read_record(p) for p in sorted(results.glob("*.json"))}
    lost = []
    for name, old in committed_records(results).items():
        if name not in on_disk:
            lost.append(f"{name} (the whole record)")
        elif isinstance(old, dict) and (gone := lost_rows(old, on_disk[name])):
            lost.append(f"{name} ({'; '.join(gone)})")
    return lost


def main(argv: list[str] | tuple[str, ...] = ()) -> int:
    """Writes RESULTS.md, its figures and the README's block; 2 when a record is damaged or lost rows."""
    p = argparse.ArgumentParser(prog="python experiments/report.py", description=__doc__.splitlines()[0])
    p.add_argument(
        "--allow-lost-rows",
        action="store_true",
        help="publish even when a record lost rows against its version at git HEAD",
    )
    args = p.parse_args(list(argv))
    try:
        lost = check_inputs(RESULTS)
    except RecordError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if lost and not args.allow_lost_rows:
        print(
            f"error: records lost rows against git HEAD: {', '.join(lost)}; nothing was published. Restore them "
            "(git checkout), or publish anyway with --allow-lost-rows",
            file=sys.stderr,
        )
        return 2
    if lost:
        print(f"warning: publishing records that lost rows against git HEAD: {', '.join(lost)}", file=sys.stderr)
    try:
        publish()
    except (KeyError, TypeError, IndexError) as e:  # a field deeper than the checked shape
        print(
            f"error: a record under {RESULTS} lacks a field the report reads ({type(e).__name__}: {e}); restore "
            "the records with git checkout or rerun their scripts",
            file=sys.stderr,
        )
        return 2
    return 0


def publish() -> None:
    """RESULTS.md, its figures and the README's results block from the records."""
    md = [
        "# Results of the experiments",
        "",
        *summary_table(),
        "",
        "Generated by `python experiments/report.py` from `experiments/results/*.json` (written by the scripts "
        "that `make ablations` runs). Every figure is mean ± sample standard deviation over the seeds that did "
        "not diverge; diverged seeds are listed, never averaged. 'Held-out' is the last 10% of the book "
        "(17,058 characters, never trained on), scored as one stream with the state carried; training uses the "
        "first 10,000 characters as in the book. Tokens/s are per run (runs share the 2 cores, pinned one per "
        "core), so compare them within a table.",
        "",
    ]
    seq, rnd = mean_of("seq"), mean_of("random")
    md += section(
        "Sequential partitioning vs random sampling (exercise 2)",
        ["seq", "random"],
        "seq_random",
        f"Sequential partitioning ends {versus('seq', 'random')} random sampling (final training "
        f"perplexity {seq:.3f} vs {rnd:.3f}): its state carries context across minibatch boundaries, "
        f"while random sampling starts every 35-character window from a zero state, so each prediction "
        f"sees less history. After 500 epochs their held-out perplexities are "
        f"{mean_of('seq', 'val_perplexity'):.1f} and {mean_of('random', 'val_perplexity'):.1f} (a uniform "
        "guess scores 28): the 10,000 training characters are memorised, not generalised, and the best "
        "held-out point comes early (see exercise 7).",
    )
    md += book_random_section()
    md += section(
        "ReLU instead of tanh: is clipping still needed? (exercise 6)",
        ["seq", "relu", "relu_noclip"],
        "relu",
        f"With clipping, ReLU ends {versus('relu', 'seq')} tanh ({mean_of('relu'):.3f} vs "
        f"{seq:.3f}). Without clipping: {diverged_text('relu_noclip')}, final perplexity "
        f"{mean_of('relu_noclip'):.3f}, {versus('relu_noclip', 'relu')} ReLU with clipping. "
        + (
            "So clipping is still needed: an unbounded activation lets the state and the gradient grow through W_hh."
            if diverged("relu_noclip")
            else "At the book's learning rate and N(0, 0.01²) initialisation ReLU trains without clipping in "
            "every seed here: at these settings clipping is a safeguard, not a requirement."
        ),
    )
    md += section(
        "Learned embeddings instead of one-hot inputs (exercises 1 and 2)",
        ["seq", "embed"],
        "embed",
        f"A 32-dimensional learned embedding ends {versus('embed', 'seq')} one-hot inputs "
        f"({mean_of('embed'):.3f} vs {seq:.3f}; held-out {mean_of('embed', 'val_perplexity'):.1f} vs "
        f"{mean_of('seq', 'val_perplexity'):.1f}). One-hot inputs are themselves an embedding: "
        "`one_hot(t) @ W_xh == W_xh[t]` (tested in "
        "tests/test_model.py), an embedding table W_xh of dimension = hidden size.",
    )
    md += section(
        "No gradient clipping (exercise 4)",
        ["seq", "noclip"],
        "noclip",
        f"Without clipping, tanh: {diverged_text('noclip')}; final perplexity {mean_of('noclip'):.3f}, "
        f"{versus('noclip', 'seq')} the clipped model ({seq:.3f}). tanh bounds the state but not the "
        "gradient through 35 steps of W_hh: "
        + (
            "an unclipped step that is too large throws the model far from where it was (training "
            "perplexity jumps above a uniform guess), so clipping is needed."
            if diverged("noclip")
            else "here no seed blew up, and the curves show what clipping at theta = 1 changes."
        ),
    )
    nd = load("nodetach")
    if nd:
        epochs = nd["config"]["epochs"]
        seq_at = at_epoch(loaded("seq"), epochs) if load("seq") else None
        ratio = mean_of("seq", "tokens_per_sec") / mean_of("nodetach", "tokens_per_sec")
        better = seq_at and mean_of("nodetach") < seq_at["mean"] - seq_at["std"]
        md += section(
            "Not detaching the state between minibatches (exercise 5)",
            ["seq", "nodetach"],
            "nodetach",
            f"Backpropagating through the whole epoch's chain (each minibatch recomputes the epoch so far "
            f"from its zero state and sends its gradient through all of it) costs {ratio:.1f}x the time per "
            f"epoch. After {epochs} epochs it reaches {pm(nd['summary'].get('perplexity'))} against "
            f"{pm(seq_at)} for the detached model at the same epoch: "
            + (
                "the longer gradient path helps per epoch, but not per second."
                if better
                else "the gradient from one 35-character minibatch through hundreds of earlier steps fades "
                "through tanh and W_hh, so it buys nothing measurable for its cost."
            ),
        )
    if load("bf16"):
        md += section(
            "bfloat16 matrix products (a speed lever, not an exercise)",
            ["seq", "bf16"],
            "bf16",
            "bf16 operands with float32 accumulation end at "
            f"{pm(loaded('bf16')['summary'].get('perplexity'))}"
            f", {versus('bf16', 'seq')} float32's {pm(loaded('seq')['summary'].get('perplexity'))}; see the "
            "README's Performance section for what they buy in speed.",
        )
    if load("gru") or load("lstm"):
        names = ["seq"] + [n for n in ("gru", "lstm", "deep") if load(n)]
        md += section(
            "GRU, LSTM and a two-layer LSTM (the book's 9.1-9.3)",
            names,
            "gated",
            "The book's next sections at their settings (256 hidden units; `deep`: two LSTM layers, "
            "lr 2), beside the 8.5 model (`seq`, 512 hidden units). The book prints perplexity 1.1 for its "
            "scratch GRU and LSTM after 500 epochs (1.0 for the concise ones and the two-layer LSTM). "
            + "; ".join(
                f"`{n}` ends at {mean_of(n):.3f}, held-out {mean_of(n, 'val_perplexity'):.1f}" for n in names[1:]
            )
            + ".",
        )
    md += seed_cost_section() + sampling_section() + hparams_section() + other_books_section() + heldout_section()
    md += shakespeare_section() + levers_section() + levers_section("shakespeare_levers_32")
    write_atomic(HERE / "RESULTS.md", "\n".join(md) + "\n")
    print(f"wrote {HERE / 'RESULTS.md'}")
    if write_readme_results(README):
        print(f"wrote the results table of {README}")


def _seeds(rec: dict) -> str:
    s = rec["summary"]
    d = s["diverged"]
    return f"{s['seeds']} seeds" + (f", {len(d)} diverged" if d else "")


def summary_table() -> list[str]:
    """One line per experiment record: what it ran and its headline number."""
    rows = []
    for name in (
        "seq",
        "random",
        "book_random",
        "relu",
        "relu_noclip",
        "embed",
        "noclip",
        "nodetach",
        "bf16",
        "gru",
        "lstm",
        "deep",
        "wotw",
    ):
        rec = load(name)
        if rec:
            best = best_val(rec)
            held = f"; best held-out {best['mean']:.2f} (epoch {best['epoch']:.0f})" if best else ""
            rows.append(
                f"| `{name}` | training perplexity {pm(rec['summary'].get('perplexity'))} after "
                f"{rec['config']['epochs']} epochs ({_seeds(rec)}){held} |"
            )
    hp = sorted(p.stem for p in RESULTS.glob("hp_*.json"))
    if hp:
        top = min(hp, key=lambda n: (best_val(loaded(n)) or {"mean": math.inf})["mean"])
        top_best = best_val(loaded(top))
        assert top_best is not None  # some configuration has a held-out curve
        rows.append(
            f"| `hp_*` ({len(hp)} configurations) | lowest held-out perplexity: `{top}`, {pm(top_best)} "
            f"at about epoch {top_best['epoch']:.0f} |"
        )
    rec = load("sampling")
    if rec:
        r: dict = {str(x["alpha"]): x for x in rec["rows"]}
        rows.append(
            f"| `sampling` | words that occur in the book: {r['1.0']['words_in_book']['mean']:.0%} sampling "
            f"from p, {r['greedy']['words_in_book']['mean']:.0%} greedy |"
        )
    rec = load("other_books")
    if rec:
        r = {(x["trained_on"], x["tested_on"]): x for x in rec["rows"]}
        own, other = r[("timemachine", "timemachine")], r[("timemachine", "war_of_the_worlds")]
        rows.append(
            f"| `other_books` | the Time Machine model, early-stopped: {pm(own['early_stopped'], 2)} on its "
            f"own book's end, {pm(other['early_stopped'], 2)} on The War of the Worlds' |"
        )
    rec = load("seed_cost")
    if rec:
        best = max(rec["rows"], key=lambda x: x["speedup"])
        rows.append(
            f"| `seed_cost` | {rec['seeds']} seeds: fastest as {best['mode']}, {best['speedup']:.2f}x the "
            "speed of one after another |"
        )
    for name, corpus in (("heldout", "the book, 80/10/10"), ("shakespeare", "tiny Shakespeare")):
        rec = load(name)
        b, c = (
            rec and best_by_val(rec["models"], ("rnn",), "static"),
            rec and best_by_val(rec["models"], COUNTING, "static"),
        )
        if b and c:
            key, unit = ("test_perplexity", "perplexity") if name == "heldout" else ("test_loss", "nats/char")
            rows.append(
                f"| `{name}` | {corpus}: best recurrent model by validation {b[0]}, test {unit} "
                f"{pm(b[1][key])}; best static counting model {c[0]}, {c[1][key]['mean']:.3f} |"
            )
    if not rows:
        return []
    return [
        "Each experiment in one line (details in the sections below):",
        "",
        "| experiment | result |",
        "|---|---|",
        *rows,
    ]


def readme_results() -> list[str]:
    """The README's headline tables: the book's runs against its printed figures, and the held-out races."""
    out = []
    rec: dict | None
    book = [n for n in BOOK if load(n)]
    if book:
        out += [
            "The book's settings, 500 epochs, mean ± std over seeds (`make ablations`):",
            "",
            "| run | section | training perplexity | the book | best held-out perplexity (epoch) |",
            "|---|---|---|---|---|",
        ]
        for n in book:
            rec, best = loaded(n), best_val(loaded(n))
            held = f"{pm(best, 2)} ({best['epoch']:.0f})" if best else "-"
            out.append(f"| `{n}` | {BOOK_RUNS[n]} | {pm(rec['summary'].get('perplexity'))} | {BOOK[n]} | {held} |")
        out.append("")
    rec = load("heldout")
    if rec:
        out += race_table(
            rec["models"],
            "The whole book, 80/10/10 by position (`python experiments/heldout.py`), scored as one stream",
            "test_perplexity",
            "test perplexity",
        )
    rec = load("shakespeare")
    if rec:
        out += race_table(
            rec["models"],
            "Tiny Shakespeare, nanoGPT's split (`python experiments/shakespeare.py`), test nats/char under both "
            "protocols: *stream* (the test part as one stream, each character given all the text before it) and "
            "*windows* (nanoGPT's estimate_loss: 12,800 random 256-character windows, each from an empty context)",
            "test_loss",
            "stream",
            windows=True,
        )
        gpt_name, gpt = next(iter(NANOGPT.items()))
        out += [f"The {gpt_name.split(' (')[0]} reports {gpt:.4f} under its own protocol, *windows*.", ""]
    return out + ["Every table, with seeds, curves and samples: [experiments/RESULTS.md](experiments/RESULTS.md)."]


def race_table(models: dict, title: str, key: str, unit: str, windows: bool = False) -> list[str]:
    """The best model of each class by validation, each against the best counting model of the class it is
    measured against (classes.REFERENCE), under the protocols it has."""
    picks = [(c, p) for c in classes.CLASSES if (p := classes.best_of(models, c))]
    best = dict(picks)
    head = f"| class | model | {unit} |" + (" windows |" if windows else "")
    head += f" vs the best counting model of its class{' (stream)' if windows else ''} |"
    out = [f"{title}; each the best of its class by validation:", "", head, "|---" * (4 + windows) + "|"]
    for c, (n, m) in picks:
        fig = f"{m[key]['mean']:.3f}" if len(m[key]["seeds"]) == 1 else pm(m[key])
        ref = best.get(classes.REFERENCE[c])
        ratio = f"{m[key]['mean'] / ref[1][key]['mean']:.3f}x the {ref[0]}" if ref and ref[0] != n else "-"
        if windows:
            w = m.get("test_loss_windows")
            fig += " | " + (pm(w) if w and len(w["seeds"]) > 1 else f"{w['mean']:.3f}" if w else _no_windows(c))
        out.append(f"| {c} | {n} | {fig} | {ratio} |")
    return out + [""]


def _no_windows(klass: str) -> str:
    return "stream only" if klass in classes.STREAM_ONLY else "not scored"


def write_readme_results(path: Path) -> bool:
    """Rewrites the block between the results markers of `path` (False when it has none)."""
    if not path.is_file():
        return False
    text = path.read_text()
    if README_START not in text or README_END not in text:
        return False
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    path.write_text(head + README_START + "\n" + "\n".join(readme_results()) + "\n" + README_END + tail)
    return True


def book_random_section() -> list[str]:
    """The book's code path for its random-sampling figure beside the prose's fresh model on random windows."""
    if not load("book_random"):
        return []
    book, fresh = (pm(loaded(n)["summary"].get("perplexity")) for n in ("book_random", "random"))
    first = at_epoch(loaded("book_random"), 1)
    return section(
        "The book's random-sampling result, as its code runs it",
        ["seq", "random", "book_random"],
        "book_random",
        "The book prints 1.3-1.4 for random sampling, but its code gets that figure by calling "
        "`train_ch8(..., use_random_iter=True)` on the model the sequential run has just trained, with the "
        "sequential iterator, so that only the state is reset at every minibatch. `book_random` is that "
        f"path: the `seq` run, then 500 more epochs with `reset_state` (its first epoch: {pm(first)}). It "
        f"ends at {book}, against {fresh} for a fresh model on random windows (`random`, what the prose "
        "describes).",
    )


def seed_cost_section() -> list[str]:
    rec = load("seed_cost")
    if rec is None:
        return []
    out = [
        "## What several seeds cost",
        "",
        f"{rec['seeds']} seeds of `seq` for {rec['epochs']} epochs on the {rec['backend']} "
        "(`python experiments/seed_cost.py`), wall time from first start to last exit:",
        "",
        "| how | wall s | vs one after another |",
        "|---|---|---|",
    ]
    out += [f"| {r['mode']} | {r['wall_seconds']:.1f} | {r['speedup']:.2f}x |" for r in rec["rows"]]
    best = max(rec["rows"], key=lambda r: r["speedup"])
    return out + [
        "",
        f"The fastest here: {best['mode']} ({best['speedup']:.2f}x). `--mode auto` (the default of "
        "every experiment script) takes pinned processes on a CPU and one vmapped program on an "
        "accelerator.",
        "",
    ]


def sampling_section() -> list[str]:
    rec = load("sampling")
    if rec is None:
        return []
    out = [
        "## Sampling instead of argmax, from p^alpha (exercise 3)",
        "",
        f"{rec['num_samples']} samples of {rec['num_chars']} characters after `{rec['prefix']}` per alpha from "
        f"each `seq` model ({len(rec['models'])} seeds); alpha = 1 is plain sampling, 'greedy' the book's argmax. "
        "Distinct words and repeated word 4-grams are measured within each sample; 'distinct samples' is the "
        "share of the samples that differ from every other.",
        "",
        "| alpha | distinct-word ratio | words that occur in the book | repeated word 4-grams | distinct samples |",
        "|---|---|---|---|---|",
    ]
    for r in rec["rows"]:
        out.append(
            f"| {r['alpha']} | {pm(r['distinct_word_ratio'], 2)} | {pm(r['words_in_book'], 2)} | "
            f"{pm(r['repeated_4grams'], 2)} | {pm(r['distinct_samples'], 2)} |"
        )
    rows = {str(r["alpha"]): {k: v["mean"] for k, v in r.items() if isinstance(v, dict)} for r in rec["rows"]}
    low, one, high, greedy = (
        rows[str(rec["rows"][0]["alpha"])],
        rows["1.0"],
        rows[str(rec["rows"][-2]["alpha"])],
        rows["greedy"],
    )
    out += (
        ["", "Examples (seed 0, first sample):", "", "```"]
        + [f"alpha {a:>6}: {t}" for a, t in rec["examples"].items()]
        + [
            "```",
            "",
            f"Flattening (alpha {rec['rows'][0]['alpha']}) makes up words: {low['words_in_book']:.0%} of them occur in "
            f"the book, against {one['words_in_book']:.0%} for plain sampling. Sharpening (alpha "
            f"{rec['rows'][-2]['alpha']}) raises that to {high['words_in_book']:.0%} but the samples collapse onto the "
            f"same memorised passages: {high['distinct_samples']:.0%} of them differ from the others"
            + (
                f", and {high['repeated_4grams']:.0%} of word 4-grams repeat within a sample"
                if high["repeated_4grams"] >= 0.05
                else " (within a sample it does not loop: it recites the book)"
            )
            + ". Greedy decoding is the limit: "
            f"one text for every call ({greedy['distinct_samples']:.0%} distinct), {greedy['words_in_book']:.0%} real "
            "words, a passage of the book the model memorised. Sampling trades fidelity for variety, and alpha sets "
            "the exchange rate.",
            "",
        ]
    )
    return out


def hparams_section() -> list[str]:
    names = sorted(p.stem for p in RESULTS.glob("hp_*.json"))
    if not names:
        return []
    ranked = sorted(names, key=lambda n: (best_val(loaded(n)) or {"mean": math.inf})["mean"])
    best, base = best_val(loaded(ranked[0])), best_val(loaded("hp_base"))
    assert best is not None and base is not None  # held-out curves of the sweep
    out = (
        [
            "## How low can you go? (exercise 7)",
            "",
            "One factor at a time around the book's settings (hidden 512, 35 steps, lr 1, 500 epochs), judged on "
            "held-out perplexity scored every 25 epochs; 'best held-out' is the lowest point of each seed's curve "
            "and its epoch (the epochs axis of the sweep). Sorted by it.",
            "",
        ]
        + table(ranked)
        + [""]
    )
    out += [val_curves(ranked, FIGURES / "hparams.png", "Held-out perplexity while training"), ""]
    blown = [n for n in ranked if diverged(n)]
    out.append(
        f"Held-out perplexity bottoms out early and then rises while training perplexity keeps falling: "
        f"10,000 characters are memorised, not generalised. The best configuration, `{ranked[0]}`, reaches "
        f"{best['mean']:.3f} ± {best['std']:.3f} at about epoch {best['epoch']:.0f}; the book's settings "
        f"reach {base['mean']:.3f} ± {base['std']:.3f} at about epoch {base['epoch']:.0f}. The lowest "
        "training perplexity and the lowest held-out perplexity come from different settings."
        + (f" Diverged: {'; '.join(f'`{n}` ({diverged_text(n)})' for n in blown)}." if blown else "")
    )
    return out + [""]


def other_books_section() -> list[str]:
    rec = load("other_books")
    if rec is None:
        return []
    out = [
        "## Other books (exercise 2)",
        "",
        "Models trained on the first 10,000 characters of one book (500 epochs, the seeds above), scored on the "
        "last 10% of each book, both after the last epoch and at the checkpoint that scored best on their own "
        "book's held-out text (early stopping); a 5-gram (interpolated Kneser-Ney) fit on the same 10,000 "
        "characters for comparison.",
        "",
        "| trained on | tested on | RNN, final | RNN, early-stopped | 5-gram | <unk> characters |",
        "|---|---|---|---|---|---|",
    ]
    for r in rec["rows"]:
        out.append(
            f"| {r['trained_on']} | {r['tested_on']} | {pm(r['final'], 1)} | {pm(r['early_stopped'])} | "
            f"{r['ngram5_same_training']:.3f} | {r['unknown_chars']} |"
        )
    if load("wotw"):
        out += ["", "Training on The War of the Worlds directly, against The Time Machine:", ""] + table(
            ["seq", "wotw"]
        )
    rows = {(r["trained_on"], r["tested_on"]): r for r in rec["rows"]}
    own = rows[("timemachine", "timemachine")]["early_stopped"]["mean"]
    other = rows[("timemachine", "war_of_the_worlds")]["early_stopped"]["mean"]
    gram = min(r["ngram5_same_training"] for r in rec["rows"])
    best_rnn = min(r["early_stopped"]["mean"] for r in rec["rows"])
    out += [
        "",
        f"Early-stopped, the Time Machine model scores {own:.2f} on its own book's unseen end and "
        f"{other:.2f} on The War of the Worlds: what transfers is the letter and short-word statistics of "
        "English, which both books share. After 500 epochs both models have memorised their 10,000 characters "
        "and score far worse on any unseen text. "
        + (
            f"The 5-gram fit on the same characters stays ahead of every RNN ({gram:.2f} at best against "
            f"{best_rnn:.2f}): from 10,000 characters, smoothed counting generalises better than this RNN."
            if gram < best_rnn
            else f"The best RNN ({best_rnn:.2f}) beats the 5-gram fit on the same characters ({gram:.2f})."
        ),
        "",
    ]
    return out


COUNTING = ("ngram", "ppm")


def heldout_section(name: str = "heldout") -> list[str]:
    """Beating counting: test perplexity of every model under the 80/10/10 protocol, the targets, the curves."""
    rec = load(name)
    if rec is None:
        return []
    models = sorted(rec["models"].items(), key=lambda kv: kv[1]["test_perplexity"]["mean"])
    sizes = rec["split_tokens"]
    out = [
        "## Beating counting",
        "",
        f"The whole book split by position: train {sizes['train']:,}, validation {sizes['val']:,}, test "
        f"{sizes['test']:,} characters. Every choice is made on validation (each run's epoch by its best "
        "checkpoint, each family's regularisation by a one-seed screening, dynamic evaluation's rule, step and "
        "segment on seed 0, each counting model's order and discount); the test part is scored as one stream "
        "continuing the text before it. Two classes race: *static* models are fixed after training (the RNN "
        "evaluated as it is; Kneser-Ney n-grams, interpolated and modified), *adaptive* ones learn from the text "
        "they score (the RNN with dynamic evaluation; PPMd, the compressor's text model, and the chosen n-gram "
        "refitted as it reads). RNNs: mean ± std over "
        f"{max(len(m['test_perplexity']['seeds']) for _, m in models)} seeds; counting models are deterministic.",
        "",
        *test_scorings("timemachine", rec),
        "",
        "| model | class | test perplexity | test nats/char | test bits/char | validation perplexity | "
        "chosen on validation |",
        "|---|---|---|---|---|---|---|",
    ]
    fig = lambda m, k: f"{m[k]['mean']:.3f}" if m["kind"] in COUNTING else pm(m[k])
    loss = lambda m: (
        (f"{m['test_loss']['mean']:.4f}" if m["kind"] in COUNTING else pm(m["test_loss"], 4))
        if "test_loss" in m
        else "-"
    )
    out += [
        f"| {n} | {m['evaluation']} | {fig(m, 'test_perplexity')} | {loss(m)} | {fig(m, 'test_bits_per_char')} | "
        f"{fig(m, 'val_perplexity')} | {_chosen(m)} |"
        for n, m in models
    ]
    out += ["", val_curves_heldout(rec), "", *heldout_screening(rec), *heldout_targets(rec), ""]
    return out


def test_scorings(corpus: str, rec: dict) -> list[str]:
    """How many times this table's test part has been scored: the test log's count, and earlier sweeps'."""
    from rnn_jax import testlog

    logged = testlog.counts(testlog.read())[(corpus, "test")]
    prior = rec.get("prior_test_scorings")
    text = f"Test-part scorings recorded in `results/test_log.jsonl`: {logged}."
    if prior:
        text += (
            f" Before the log existed, {prior['sweeps']} sweeps (results committed in "
            f"{', '.join(prior['commits'])}) scored this test part {prior['model_seed_scorings']} times in all "
            "(each model of their tables, once per seed), while the screening grew between them; the "
            "recurrent figures below come from the last of them."
        )
    return [text]


def _chosen(m: dict) -> str:
    """What validation chose for a model, in a few words."""
    if m["kind"] == "ppm":
        return f"variant {m['config']['variant']}, order {m['config']['order']}"
    if m["kind"] == "ngram":
        text = f"order {m['config']['n']}, discount {m['config']['discount']}"
        text += f", fit on {m['config']['fit_on']}" if "fit_on" in m["config"] else ""
        return text + (f", refit every {m['config']['refit_every']}" if "refit_every" in m["config"] else "")
    text = (
        f"{m['regulariser']}, epoch {m['best_epoch']['mean']:.0f}"
        if "regulariser" in m
        else (
            f"{m['selection']['epochs']} epochs (the selection run's best: {m['selection']['best_epoch']})"
            if "selection" in m
            else ""
        )
    )
    if m["evaluation"] == "dynamic":
        d = m["dynamic"]
        text += f"; {d['rule']} step {d['lr']:g}, segments of {d['segment']}"
    if "mixture" in m:
        text += f"; weight {m['mixture']['weight']} on the RNN, the rest on the {m['mixture']['ngram']['n']}-gram"
    if "ensemble" in m:
        text += f"; the mean of {m['ensemble']} seeds' distributions"
    return text


def val_curves_heldout(rec: dict) -> str:
    """Validation perplexity per epoch: each screened configuration (seed 0, thin) and each chosen one (mean over
    seeds, thick), against the best n-gram's (a flat line)."""
    fig, ax = plt.subplots(figsize=(7.2, 4.4), dpi=110)
    for n, m in rec["models"].items():
        if m["kind"] == "rnn" and m["evaluation"] == "static":
            k = min(len(c) for c in m["val_curves"])
            ax.plot(
                np.arange(1, k + 1),
                np.mean([c[:k] for c in m["val_curves"]], 0),
                lw=2.5,
                label=f"{n} {m['regulariser']} ({len(m['val_curves'])} seeds)",
            )
    chosen = {f"{n} {m['regulariser']}" for n, m in rec["models"].items() if m["kind"] == "rnn"}
    for n, s in rec["screening"].items():
        if s.get("val_curve") and n not in chosen:  # a chosen configuration's seed 0 is in its mean already
            ax.plot(np.arange(1, len(s["val_curve"]) + 1), s["val_curve"], lw=0.9, alpha=0.8, label=f"{n} (seed 0)")
    static = [(n, m) for n, m in rec["models"].items() if m["kind"] in COUNTING and m["evaluation"] == "static"]
    name, best = min(static, key=lambda nm: nm[1]["val_perplexity"]["mean"])
    ax.axhline(best["val_perplexity"]["mean"], color="k", ls="--", lw=1, label=f"{name} (best static counting)")
    return save_figure(
        fig,
        ax,
        FIGURES / f"{rec['name']}.png",
        "Validation perplexity (the book, 80/10/10)",
        "validation perplexity",
        legend_size=7,
    )


def heldout_screening(rec: dict) -> list[str]:
    """The one-seed screening each family's regularisation was chosen from."""
    out = [
        "Screening (seed 0, lowest validation perplexity over the epochs; `cosine`: the step size falls to about "
        "zero over the run's epochs):",
        "",
        "| family and regularisation | epochs | step size | best validation perplexity | at epoch |",
        "|---|---|---|---|---|",
    ]
    for n, s in rec["screening"].items():
        c, curve = s["config"], s.get("val_curve") or []
        at = int(np.argmin(curve)) + 1 if curve else "—"
        out.append(
            f"| {n} | {c['epochs']} | {c['optimizer']} {c['lr']:g}, {c.get('lr_schedule', 'constant')} | "
            f"{s['best_val_perplexity']:.3f} | {at} |"
        )
    return out + [""]


# Figures reported by nanoGPT's README for its shakespeare_char configurations, on the same 10% (its "val" part,
# scored in blocks of up to 256 characters of context): quoted for comparison, not measured here.
NANOGPT = {
    "nanoGPT baby GPT (6 layers, 10.7M parameters, ~3 min on an A100 GPU)": 1.4697,
    "nanoGPT CPU configuration (~3 min on a laptop CPU; its windows are 64 characters)": 1.88,
}
# (loss, parameters, training FLOPs = 6 N x tokens) under its protocol: the baby GPT's 10.65M parameters, 5,000
# iterations of 64 x 256 (its config), windows of 256; the CPU configuration's figure is over windows of 64 (its
# block size), its parameter count not stated, so neither is given here
NANOGPT_ROWS = {
    "nanoGPT baby GPT (6 layers, 10.7M parameters, ~3 min on an A100 GPU)": (
        1.4697,
        f"{10_650_000:,}",
        f"{6 * 10_650_000 * 5_000 * 64 * 256:.2e}",
    ),
    "nanoGPT CPU configuration (~3 min on a laptop CPU; its windows are 64 characters)": (1.88, "", ""),
}


def shakespeare_section(name: str = "shakespeare") -> list[str]:
    """Tiny Shakespeare with nanoGPT's split: the table, the curves against wall-clock time, targets, samples."""
    rec = load(name)
    if rec is None:
        return []
    sp, models = rec["split"], rec["models"]
    rows = sorted(models.items(), key=lambda kv: kv[1]["test_loss"]["mean"])
    out = [
        "## Tiny Shakespeare (nanoGPT's split)",
        "",
        f"char-rnn's tiny Shakespeare ({sp['characters']:,} characters, every character kept: "
        f"{sp['vocab_size'] - 1} symbols and `<unk>`). Test: the last {sp['test']:,} characters, nanoGPT's "
        "validation part (`data[int(0.9 n):]`), each character scored given all the true text before it. "
        f"Validation: the {sp['val']:,} characters before it, cut from nanoGPT's training 90%. Every choice is "
        "made there by models that did not train on it (a selection run per recurrent model, counting models fit "
        f"on the other {sp['train']:,}); the final models then train with those settings on all of nanoGPT's 90%, "
        "validation included, as nanoGPT's do, so their 'validation' column is the selection run's. Losses in "
        "nats per character (nanoGPT's unit); recurrent models: mean ± std over the final seeds, one training "
        "run each on one core of this 2-core CPU. *static*: fixed after training; *adaptive*/*dynamic*: learn "
        "from the text they score.",
        "",
        *test_scorings("shakespeare", rec),
        "",
        "| model | class | test nats/char, stream | test nats/char, windows | test bits/char, stream | "
        "test perplexity, stream | validation nats/char, stream | validation, windows | parameters | training FLOPs | "
        "training wall s | tokens/s | chosen on validation |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n, m in rows:
        det = m["kind"] in COUNTING or len(m["test_loss"]["seeds"]) == 1
        f = (lambda st, d=4: f"{st['mean']:.{d}f}") if det else (lambda st, d=4: pm(st, d))
        k = m.get("ensemble") or len(m["test_loss"]["seeds"])  # an ensemble is one figure of k seeds' runs
        seeds = "" if m["kind"] in COUNTING else f" ({k} seed{'s' if k > 1 else ''})"
        num = lambda v, fmt: "-" if v is None else format(v, fmt)
        klass = m.get("class") or classes.class_of(m)
        out.append(
            f"| {n}{seeds} | {klass} | {f(m['test_loss'])} | {windows_figure(m, 'test_loss_windows', klass)} | "
            f"{f(m['test_bits_per_char'], 3)} | {f(m['test_perplexity'], 3)} | {f(m['val_loss'])} | "
            f"{windows_figure(m, 'val_loss_windows', klass)} | {num(m.get('params'), ',')} | "
            f"{num(m.get('train_flop'), '.2e')} | {num(m.get('wall_seconds'), '.0f')} | "
            f"{num(m.get('tokens_per_sec'), ',.0f')} | {_chosen(m)} |"
        )
    out += [
        f"| {n} | reported elsewhere | | {v:.4f} | | | | | {p} | {fl} | | | |" for n, (v, p, fl) in NANOGPT_ROWS.items()
    ]
    out += ["", shakespeare_curves(rec), "", *shakespeare_targets(rec)]
    if rec.get("samples"):
        smp = rec["samples"]
        out += [
            "",
            f"Three samples from the best model by validation (`{Path(smp['run']).parent.name}`, final run "
            f"`{Path(smp['run']).name}`), prompt `{smp['prompt']}`, temperature {smp['temperature']}, "
            "sampling seeds "
            f"{', '.join(map(str, smp['seeds']))}; `{smp['command']}` prints each again:",
            "",
        ]
        for text in smp["texts"]:
            out += ["```", text, "```"]
    return out + [""]


LEVER_RECORDS = ("shakespeare_levers", "shakespeare_levers_32")  # the probe budget, and the candidate's full one


def levers_section(name: str = "shakespeare_levers") -> list[str]:
    """The levers on tiny Shakespeare's validation part under both protocols, with the loss by window position."""
    rec = load(name)
    if rec is None:
        return []
    w = rec["windows"]
    out = [
        f"### Levers against nanoGPT's protocol (`python experiments/shakespeare_levers.py`, {rec['epochs']} epochs)",
        "",
        "Each lever is the LSTM recipe (`--exp shakespeare`) with one change, trained once on the training part and "
        f"scored on the validation part (never the test part): as one stream, and under *windows* ({w['windows']:,} "
        f"windows of {w['length']} characters, each from a zero state; ± its standard error over the windows), "
        "with the windows' loss by position in the window. Training FLOPs: the cell's declared FLOPs per token "
        "times the tokens trained, against nanoGPT's baby GPT's ~5.2e15. Wall seconds are those of one run on one "
        "core (`taskset`), as the sweep ran, beside other work.",
        *recipe_reference(),
        "",
        "| lever | validation, stream | validation, windows | position 0 | 1-9 | 10-49 | 50-99 | 100-255 | "
        "training FLOPs (of nanoGPT's) | wall s | tokens/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n, r in sorted(rec["levers"].items(), key=lambda kv: kv[1]["val_loss_windows"]["mean"]):
        v, bp = r["val_loss_windows"], r["val_loss_windows"]["by_position"]
        bands = " | ".join(f"{bp.get(k, float('nan')):.3f}" for k in ("0", "1-9", "10-49", "50-99", "100-255"))
        out.append(
            f"| {n} | {r['val_loss']:.4f} | {v['mean']:.4f} ± {v['se']:.4f} | {bands} | {r['train_flop']:.2e} "
            f"({r['flop_vs_nanogpt']:.3f}) | {r['wall_seconds']:.0f} | {r['tokens_per_sec']:,.0f} |"
        )
    return out + [""]


def recipe_reference() -> list[str]:
    """The recipe's own selection run (Shakespeare record), to read the levers against."""
    m = (load("shakespeare") or {}).get("models", {}).get("lstm-1x512")
    if not m:
        return []
    return [
        "",
        f"The recipe itself (`lstm-1x512`, {m['config']['epochs']} epochs, its selection run): validation "
        f"{m['val_loss']['mean']:.4f} as one stream.",
    ]


def windows_figure(m: dict, key: str, klass: str) -> str:
    """A windows-protocol figure (mean ± std over seeds, ± its standard error over windows when one seed), or why
    there is none."""
    w = m.get(key)
    if not w:
        return _no_windows(klass)
    if len(w["seeds"]) > 1:
        return pm(w, 4)
    return f"{w['mean']:.4f}" + (f" (± {w['se']:.4f})" if w.get("se") else "")


def curve_points(curve: list, epoch_flop: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """(seconds, FLOPs, validation loss, protocol) of a wall curve: the windows figure where the run scored it,
    else the stream's; rows of earlier records are [seconds, stream loss], one per epoch (FLOPs: epoch_flop each)."""
    rows = [r if len(r) == 4 else [r[0], epoch_flop and epoch_flop * (i + 1), r[1], None] for i, r in enumerate(curve)]
    windowed = all(r[3] is not None for r in rows)
    col = 3 if windowed else 2
    as_array = lambda i: np.array([np.nan if r[i] is None else r[i] for r in rows], float)
    return as_array(0), as_array(1), as_array(col), "windows" if windowed else "stream"


def model_curves(rec: dict, levers: dict | None) -> list[tuple[str, list, float | None]]:
    """(label, wall curve, FLOPs of one epoch) of each recurrent model's selection run and each lever's run."""
    out: list[tuple[str, list, float | None]] = [
        (f"{n} (selection run)", c, epoch_flop(m["config"], rec["split"]))
        for n, m in rec["models"].items()
        if classes.class_of(m) == classes.RECURRENT
        for c in m.get("wall_curves", [])
    ]
    for n, r in (levers or {}).get("levers", {}).items():
        out.append((f"lever {n}, {(levers or {})['epochs']} epochs", r["wall_curve"], None))
    return out


def epoch_flop(cfg: dict, split: dict) -> float:
    """Training FLOPs of one epoch of a selection run (on the train part): the cell's declared FLOPs per token and
    the output layer's, times the minibatches every random offset gives."""
    per_token = (
        CELLS[cfg["cell"]].flop_per_token(cfg["hidden"], cfg["num_layers"]) + 6 * cfg["hidden"] * split["vocab_size"]
    )
    tokens = data.min_batches(split["train"], cfg["batch_size"], cfg["num_steps"], cfg["sampling"])
    return float(per_token * tokens * cfg["batch_size"] * cfg["num_steps"])


def shakespeare_curves(rec: dict) -> str:
    """Time to quality: validation loss against training seconds and against training FLOPs for each recurrent
    model and lever, the counting models as lines, nanoGPT's baby GPT marked."""
    fig, (ax_t, ax_f) = plt.subplots(1, 2, figsize=(11, 4.4), dpi=110)
    gpt_name, gpt = next(iter(NANOGPT.items()))
    curves = [c for name in LEVER_RECORDS for c in model_curves({**rec, "models": {}}, load(name))]
    for label, curve, per_epoch in model_curves(rec, None) + curves:
        t, flop, loss, protocol = curve_points(curve, per_epoch)
        ax_t.plot(t, loss, lw=1.5, label=f"{label}, {protocol}")
        if np.isfinite(flop).all():
            ax_f.plot(flop, loss, lw=1.5, label=f"{label}, {protocol}")
    for style, ev in (("--", classes.COUNTING_STATIC), (":", classes.COUNTING_ADAPTIVE)):
        b = classes.best_of(rec["models"], ev)
        if b:
            for ax in (ax_t, ax_f):
                ax.axhline(b[1]["val_loss"]["mean"], color="k", ls=style, lw=1, label=f"{b[0]} ({ev}, stream)")
    ax_t.axhline(gpt, color="r", ls="-.", lw=1, label=f"{gpt_name.split(' (')[0]}, {gpt} (its test part)")
    ax_f.plot([float(NANOGPT_ROWS[gpt_name][2])], [gpt], "r*", ms=12)
    ax_f.annotate(" nanoGPT baby GPT (its test part)", (float(NANOGPT_ROWS[gpt_name][2]), gpt), fontsize=7)
    ax_t.set(xlabel="training seconds", ylabel="validation loss (nats/char)")
    ax_f.set(xlabel="training FLOPs", xscale="log")
    for ax in (ax_t, ax_f):
        ax.grid(True, alpha=0.3)
    ax_t.legend(fontsize=6)
    fig.suptitle("Tiny Shakespeare: validation loss against time and compute", fontsize=10)
    fig.tight_layout()
    FIGURES.mkdir(parents=True, exist_ok=True)
    path = FIGURES / f"{rec['name']}.png"
    fig.savefig(path)
    plt.close(fig)
    return f"![Tiny Shakespeare: validation loss against time and compute]({path.relative_to(HERE)})"


def shakespeare_targets(rec: dict) -> list[str]:
    """The best model of each class by validation against the counting model of its class, and the best pure
    recurrent model against nanoGPT's reported baby GPT under nanoGPT's own protocol (windows) alone."""
    models = rec["models"]
    gpt_name, gpt = next(iter(NANOGPT.items()))
    lines = []
    for klass in (classes.RECURRENT, classes.COMBINED, classes.DYNAMIC):
        b, ref = classes.best_of(models, klass), classes.best_of(models, classes.REFERENCE[klass])
        if not b:
            continue
        t = b[1]["test_loss"]["mean"]
        vs = f", {t / ref[1]['test_loss']['mean']:.3f}x the {ref[0]}'s {ref[1]['test_loss']['mean']:.4f}" if ref else ""
        lines.append(f"Best {klass} model by validation: {b[0]}, test {t:.4f} nats as one stream{vs}.")
    best_w = classes.best_of(models, classes.RECURRENT, "val_loss_windows")
    if best_w and best_w[1].get("test_loss_windows"):
        w = best_w[1]["test_loss_windows"]
        lines.append(
            f"Under nanoGPT's protocol (windows), the best recurrent model by validation, {best_w[0]}, scores "
            f"{pm(w, 4)} nats ({w['mean'] - gpt:+.4f} against the {gpt:.4f} reported for the "
            f"{gpt_name.split(' (')[0]})."
        )
    else:
        lines.append(
            f"No recurrent model of this record has a windows figure yet, so none is compared with the "
            f"{gpt_name.split(' (')[0]}'s {gpt:.4f}."
        )
    b = classes.best_of({n: m for n, m in models.items() if n.startswith("rnn-tanh")}, classes.RECURRENT)
    static_count = classes.best_of(models, classes.COUNTING_STATIC)
    if b and static_count:
        t, ref = b[1]["test_loss"]["mean"], static_count[1]["test_loss"]["mean"]
        lines.append(
            f"The book's tanh RNN, regularised ({b[0]}): {t:.4f} against the {static_count[0]}'s {ref:.4f} "
            f"({'below' if t < ref else 'not below'} the best static n-gram)."
        )
    return [" ".join(lines)] if lines else []


def best_by_val(models: dict, kinds, evaluation: str) -> tuple[str, dict] | None:
    """The model of these kinds and evaluation class with the lowest validation loss, as (name, record)."""
    ms = [(n, m) for n, m in models.items() if m["kind"] in kinds and m["evaluation"] == evaluation]
    return min(ms, key=lambda nm: nm[1]["val_perplexity"]["mean"]) if ms else None


def heldout_targets(rec: dict) -> list[str]:
    """The best recurrent models against the counting model of their class that validation chose."""
    models = rec["models"]
    static, adaptive = best_by_val(models, COUNTING, "static"), best_by_val(models, COUNTING, "adaptive")
    assert static is not None  # the counting models are always fitted
    ref = static[1]["test_perplexity"]["mean"]
    lines = [
        f"The static counting model chosen on validation is the {static[0]} ({_chosen(static[1])}): test "
        f"perplexity {ref:.3f}."
    ]
    if adaptive:
        lines.append(
            f"The adaptive one is {adaptive[0]} ({_chosen(adaptive[1])}): {adaptive[1]['test_perplexity']['mean']:.3f}."
        )
    for label, ev, against in (("static", "static", static), ("dynamic", "dynamic", adaptive or static)):
        b = best_by_val({n: m for n, m in models.items() if "ensemble" not in m and "mixture" not in m}, ("rnn",), ev)
        if b:
            ratio = b[1]["test_perplexity"]["mean"] / against[1]["test_perplexity"]["mean"]
            lines.append(
                f"Best recurrent model by validation, {label} evaluation: {b[0]}, test "
                f"{pm(b[1]['test_perplexity'])}, {ratio:.3f}x the {against[0]}."
            )
    for ev in ("static", "dynamic"):
        b = best_by_val({n: m for n, m in models.items() if n.startswith("rnn-tanh")}, ("rnn",), ev)
        if b:
            t = b[1]["test_perplexity"]["mean"]
            lines.append(
                f"The book's tanh RNN, regularised, {ev}: {t:.3f} against the static {ref:.3f} "
                f"({'at or below' if t <= ref else 'above'} the best static counting model)."
            )
    return [" ".join(lines)]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
