"""The book's exercises at its settings: sampling schemes, ReLU, embeddings, clipping, detaching, bf16, gated cells."""

from __future__ import annotations

from experiments.common import load
from experiments.sections.figures import at_epoch, diverged, diverged_text, loaded, mean_of, pm, versus
from experiments.sections.seeds import section


def seq_random_section() -> list[str]:
    """Sequential partitioning against random sampling (exercise 2)."""
    seq, rnd = mean_of("seq"), mean_of("random")
    return section(
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


def relu_section() -> list[str]:
    """ReLU instead of tanh, with and without clipping (exercise 6)."""
    seq = mean_of("seq")
    return section(
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


def embed_section() -> list[str]:
    """Learned embeddings instead of one-hot inputs (exercises 1 and 2)."""
    seq = mean_of("seq")
    return section(
        "Learned embeddings instead of one-hot inputs (exercises 1 and 2)",
        ["seq", "embed"],
        "embed",
        f"A 32-dimensional learned embedding ends {versus('embed', 'seq')} one-hot inputs "
        f"({mean_of('embed'):.3f} vs {seq:.3f}; held-out {mean_of('embed', 'val_perplexity'):.1f} vs "
        f"{mean_of('seq', 'val_perplexity'):.1f}). One-hot inputs are themselves an embedding: "
        "`one_hot(t) @ W_xh == W_xh[t]` (tested in "
        "tests/test_model.py), an embedding table W_xh of dimension = hidden size.",
    )


def noclip_section() -> list[str]:
    """tanh without gradient clipping (exercise 4)."""
    seq = mean_of("seq")
    return section(
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


def nodetach_section() -> list[str]:
    """Backpropagating through the whole epoch instead of detaching the state (exercise 5)."""
    nd = load("nodetach")
    if not nd:
        return []
    epochs = nd["config"]["epochs"]
    seq_at = at_epoch(loaded("seq"), epochs) if load("seq") else None
    ratio = mean_of("seq", "tokens_per_sec") / mean_of("nodetach", "tokens_per_sec")
    better = seq_at and mean_of("nodetach") < seq_at["mean"] - seq_at["std"]
    return section(
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


def bf16_section() -> list[str]:
    """bfloat16 matrix products against float32."""
    if not load("bf16"):
        return []
    return section(
        "bfloat16 matrix products (a speed lever, not an exercise)",
        ["seq", "bf16"],
        "bf16",
        "bf16 operands with float32 accumulation end at "
        f"{pm(loaded('bf16')['summary'].get('perplexity'))}"
        f", {versus('bf16', 'seq')} float32's {pm(loaded('seq')['summary'].get('perplexity'))}; see the "
        "README's Performance section for what they buy in speed.",
    )


def gated_section() -> list[str]:
    """GRU, LSTM and a two-layer LSTM at the book's settings (9.1-9.3)."""
    if not (load("gru") or load("lstm")):
        return []
    names = ["seq"] + [n for n in ("gru", "lstm", "deep") if load(n)]
    return section(
        "GRU, LSTM and a two-layer LSTM (the book's 9.1-9.3)",
        names,
        "gated",
        "The book's next sections at their settings (256 hidden units; `deep`: two LSTM layers, "
        "lr 2), beside the 8.5 model (`seq`, 512 hidden units). The book prints perplexity 1.1 for its "
        "scratch GRU and LSTM after 500 epochs (1.0 for the concise ones and the two-layer LSTM). "
        + "; ".join(f"`{n}` ends at {mean_of(n):.3f}, held-out {mean_of(n, 'val_perplexity'):.1f}" for n in names[1:])
        + ".",
    )


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


def book_sections() -> list[str]:
    """The sections of the book's exercises, in the order RESULTS.md gives them."""
    return (
        seq_random_section()
        + book_random_section()
        + relu_section()
        + embed_section()
        + noclip_section()
        + nodetach_section()
        + bf16_section()
        + gated_section()
    )
