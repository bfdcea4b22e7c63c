"""The recurrences raced on tiny Shakespeare: each linear recurrence (and the LSTM, for a like-for-like block) in
3 residual blocks as wide as gives the recipe's parameter count (1.22M; the width
`rnn_jax.bench.recurrences.equal_width` finds, which a test holds these to), trained as the recipe is.

RACE_BUDGET gives each the training budget of the recipe's LSTM (`lstm-1x512`, 40 epochs): as many epochs as fit
in its wall time and its FLOPs, whichever binds (`shakespeare_levers.budget_epochs`, read from the probe record
results/shakespeare_levers.json, where each ran 8 epochs on the same 2 cores, one after the other; a test holds
these to that record). The budget is a ceiling: RACE_EPOCHS, the epochs each trains for, are chosen on validation
under it.
"""

from __future__ import annotations

from typing import Any

from rnn_jax import experiments as experiments_lib

RESIDUAL = {"block": "residual", "num_layers": 3, "forget_bias": 0.0, "weight_drop": 0.0}
FAMILIES: dict[str, dict[str, Any]] = {
    "mingru-3x184": {**RESIDUAL, "cell": "mingru", "hidden": 184},
    "minlstm-3x176": {**RESIDUAL, "cell": "minlstm", "hidden": 176, "forget_bias": 1.0},
    "lru-3x168": {**RESIDUAL, "cell": "lru", "hidden": 168},
    "rglru-3x176": {**RESIDUAL, "cell": "rglru", "hidden": 176},
    "lstm-3x152": {**RESIDUAL, "cell": "lstm", "hidden": 152, "forget_bias": 1.0, "weight_drop": 0.25},
}
RECIPE_EPOCHS = experiments_lib.EXPERIMENTS["shakespeare"].epochs  # the recipe's: 40
# the ceiling (the order: the best of the probe by validation, windows, first)
RACE_BUDGET = {"lstm-3x152": 22, "rglru-3x176": 23, "mingru-3x184": 24, "minlstm-3x176": 22, "lru-3x168": 21}
# Chosen on validation: 8 epochs (the probe's runs, which serve as the selection runs). The residual LSTM trained
# for its whole budget (22 epochs, the cosine schedule over all of them) overfits: its validation loss was best at
# epoch 7 (1.5136 stream, 1.5564 windows of 1,280) and ended at 1.5726 (1.6324), against 1.4767 (1.5175 over 12,800
# windows) for the 8-epoch run, whose schedule anneals by epoch 8; the other four were not run longer.
RACE_EPOCHS = dict.fromkeys(RACE_BUDGET, 8)
