"""The named experiments (--exp NAME): each a Config that differs from BASE where it says, the chained ones that
run several of them as stages, and the corpus an experiment trains on by default."""

from __future__ import annotations

import dataclasses

from rnn_jax.config import Config

BASE = Config()
EXPERIMENTS: dict[str, Config] = {
    "seq": BASE,
    "random": dataclasses.replace(BASE, sampling="random"),
    "tiny": dataclasses.replace(BASE, hidden=16, batch_size=2, num_steps=6, max_tokens=2_000, epochs=2),
    # the book's exercises, each a one-line change
    "relu": dataclasses.replace(BASE, activation="relu"),
    "relu_noclip": dataclasses.replace(BASE, activation="relu", clip_norm=None),
    "embed": dataclasses.replace(BASE, encoder="embed"),
    "noclip": dataclasses.replace(BASE, clip_norm=None),
    "nodetach": dataclasses.replace(BASE, detach=False, epochs=100),  # each step recomputes the epoch so far
    "bf16": dataclasses.replace(BASE, matmul_dtype="bfloat16"),  # speed lever: does perplexity change?
    # sequential windows, the state reset to zeros at every minibatch (the book's code for its random-sampling run)
    "seq_reset": dataclasses.replace(BASE, reset_state=True),
    # the book's next sections: GRU (9.1), LSTM (9.2), a two-layer LSTM (9.3), each with 256 hidden units
    "gru": dataclasses.replace(BASE, cell="gru", hidden=256),
    "lstm": dataclasses.replace(BASE, cell="lstm", hidden=256),
    "deep": dataclasses.replace(BASE, cell="lstm", num_layers=2, hidden=256, lr=2.0),
    # the whole book, its last 10% held out: how the model does on text it has not seen
    # (Adam: SGD at lr 1 needs 50 epochs to reach 6.2 on held-out text, Adam 10 to reach 6.1)
    "full": dataclasses.replace(
        BASE, max_tokens=-1, val_fraction=0.1, optimizer="adam", lr=0.002, epochs=20, eval_every=2, checkpoint_every=10
    ),
    # the whole book split 80/10/10 by position: choices on validation (every epoch), the test part scored once
    "heldout": dataclasses.replace(
        BASE,
        max_tokens=-1,
        val_fraction=0.1,
        test_fraction=0.1,
        optimizer="adam",
        lr=0.002,
        epochs=30,
        eval_every=1,
        checkpoint_every=0,
        keep_checkpoints=1,
    ),
    # tiny Shakespeare split as nanoGPT splits it (--corpus shakespeare): the last 10% (nanoGPT's "val") is the
    # test part, scored once; validation is the 5% of the corpus just before it, cut from the training 90% and
    # never trained on. An LSTM with the levers the field uses: scaled init, forget bias, longer windows, Adam,
    # a cosine step size, variational dropout and DropConnect, bf16 products (f32 accumulation).
    "shakespeare": dataclasses.replace(
        BASE,
        preprocess="none",
        max_tokens=-1,
        test_fraction=0.1,
        split_rule="floor",
        val_fraction=0.05,
        cell="lstm",
        hidden=512,
        batch_size=64,
        num_steps=100,
        init="scaled",
        forget_bias=1.0,
        optimizer="adam",
        lr=0.002,
        lr_schedule="cosine",
        epochs=40,
        dropout=0.25,
        dropout_mask="sequence",
        weight_drop=0.25,
        matmul_dtype="bfloat16",
        eval_every=1,
        checkpoint_every=0,
        keep_checkpoints=1,
        predict_every=5,
    ),
}

# Experiments run as stages, each starting from the parameters the stage before ended with (--exp NAME).
# book_random is the book's code path for its random-sampling result: its train_ch8(..., use_random_iter=True)
# continues the model the sequential run trained, on the same sequential iterator, resetting the state every
# minibatch.
CHAINS: dict[str, tuple[str, ...]] = {"book_random": ("seq", "seq_reset")}

# The corpus (a corpora.CORPORA name) an experiment trains on when --corpus is not given; the book's otherwise.
CORPUS_OF: dict[str, str] = {"shakespeare": "shakespeare"}
