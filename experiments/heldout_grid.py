"""What the held-out sweep (experiments/heldout.py) compares: the model families and the regularisation each one's
screening tries, the dynamic-evaluation grid, the n-gram orders and the windows draw."""

from __future__ import annotations

import dataclasses

from rnn_jax import experiments as experiments_lib
from rnn_jax import scoring

BASE = dataclasses.replace(experiments_lib.EXPERIMENTS["heldout"], predict_every=0)
# the windows protocol (nanoGPT's estimate_loss) beside the stream: 12,800 windows of 256 characters, seed 0
DRAW = {"windows": scoring.WINDOWS, "length": scoring.WINDOW_LENGTH, "seed": scoring.WINDOW_SEED}
NGRAM_ORDERS = range(2, 11)
# Dynamic evaluation: (update rule, step size) x segment length, chosen on the validation text of seed 0.
DYNAMIC_STEPS = (
    ("sgd", 0.01),
    ("sgd", 0.02),
    ("sgd", 0.04),
    ("rms", 1e-4),
    ("rms", 2e-4),
    ("rms", 4e-4),
    ("rms", 8e-4),
    ("rms", 1.6e-3),
)
DYNAMIC_SEGMENTS = (10, 20, 50)

# Each family (cell and depth, with its step size) and the regularisation settings its screening compares;
# a setting may give its own number of epochs (a cosine step size falls over exactly that many).
SEQ = {"dropout_mask": "sequence"}
COS = {"lr_schedule": "cosine"}
TANH_REG = {"dropout": 0.25, **SEQ, "weight_drop": 0.25}  # the tanh RNN's winner of the first screening
FAMILIES: dict[str, tuple[dict, dict]] = {
    "rnn-tanh-1x512": (
        {"epochs": 100},
        {
            "none": {"epochs": 50},
            "out0.25-seq+wdrop0.25": TANH_REG,
            "out0.25-seq+wdrop0.25+cosine150": {**TANH_REG, **COS, "epochs": 150},
            "out0.25-seq+wdrop0.25+cosine300": {**TANH_REG, **COS, "epochs": 300},
        },
    ),
    # the gated cells learn faster at a larger step
    "gru-1x256": (
        {"cell": "gru", "hidden": 256, "lr": 0.005, "epochs": 40},
        {
            "out0.25-seq+wdrop0.25": TANH_REG,
            "out0.25-seq+wdrop0.25+cosine60": {**TANH_REG, **COS, "epochs": 60},
        },
    ),
    "lstm-1x256": (
        {"cell": "lstm", "hidden": 256, "lr": 0.005, "epochs": 40},
        {
            "out0.25-seq+wdrop0.25": TANH_REG,
            "out0.25-seq+wdrop0.25+cosine60": {**TANH_REG, **COS, "epochs": 60},
        },
    ),
    "lstm-2x256": (
        {"cell": "lstm", "num_layers": 2, "hidden": 256, "lr": 0.005, "epochs": 40},
        {
            "out0.25-seq+layer0.25+wdrop0.25": {**TANH_REG, "layer_dropout": 0.25},
            "out0.25-seq+layer0.25+wdrop0.25+cosine60": {**TANH_REG, "layer_dropout": 0.25, **COS, "epochs": 60},
            "out0.4-seq+layer0.3+wdrop0.5+cosine80": {
                "dropout": 0.4,
                **SEQ,
                "layer_dropout": 0.3,
                "weight_drop": 0.5,
                **COS,
                "epochs": 80,
            },
        },
    ),
}
# the linear recurrences (and the LSTM, for a like-for-like block) in 3 residual blocks as wide as gives lstm-1x256's
# parameter count on this vocabulary (299k; `rnn_jax.bench.recurrences.equal_width`, which a test holds these to),
# at the gated cells' step size; no DropConnect (their recurrences hold no weight matrix), output dropout instead
RESIDUAL = {"block": "residual", "num_layers": 3, "forget_bias": 0.0, "weight_drop": 0.0, "lr": 0.005, "epochs": 40}
OUT = {"dropout": 0.25, **SEQ}
# the first two settings' best epochs were 9-14 of 40 and 60 (the step size still high when validation was best):
# shorter cosine schedules that anneal about there, one with a quarter of the stream entering blocks 2 and 3 dropped
RESIDUAL_REGS = {
    "out0.25-seq": OUT,
    "out0.25-seq+cosine60": {**OUT, **COS, "epochs": 60},
    "out0.25-seq+cosine15": {**OUT, **COS, "epochs": 15},
    "out0.25-seq+layer0.25+cosine20": {**OUT, "layer_dropout": 0.25, **COS, "epochs": 20},
}
LINEAR_FAMILIES: dict[str, tuple[dict, dict]] = {
    "mingru-3x88": ({**RESIDUAL, "cell": "mingru", "hidden": 88}, RESIDUAL_REGS),
    "minlstm-3x88": ({**RESIDUAL, "cell": "minlstm", "hidden": 88, "forget_bias": 1.0}, RESIDUAL_REGS),
    "lru-3x80": ({**RESIDUAL, "cell": "lru", "hidden": 80}, RESIDUAL_REGS),
    "rglru-3x88": ({**RESIDUAL, "cell": "rglru", "hidden": 88}, RESIDUAL_REGS),
    "lstm-3x72": ({**RESIDUAL, "cell": "lstm", "hidden": 72, "forget_bias": 1.0}, RESIDUAL_REGS),
}
FAMILIES |= LINEAR_FAMILIES
SMOKE_FAMILIES: dict[str, tuple[dict, dict]] = {
    "rnn-tanh-1x32": ({"hidden": 32}, {"none": {}, "out0.3-seq": {"dropout": 0.3, **SEQ}})
}
