"""Speed of the book's RNN (§8.5): train-step variants against PyTorch peers and the matmul limit, and more.

Sections: throughput (variants and peers in alternating repetitions, with the fp32 limit), compile
(train-epoch compile time at T = 35 and 350), generation (one jitted scan vs the book's loop), scaling
(H x T: tokens/s and XLA memory), devices (data parallel over local devices), contention (each --cells
cell and its peers on all cores or one, quiet or with one core kept busy), e2e (--e2e).
FLOP per training token is 6 H (H + V): forward h W_hh (2 H^2) and h W_hq (2 H V), backward twice the
forward (gradients of activations and of weights); x W_xh is a row gather (0 FLOP), tanh/softmax are
ignored. At H 512, V 28 that is 1,658,880 ~ 1.66 MFLOP, so tokens/s limit = matmul FLOP/s / 1.66e6.
--cells gru,lstm adds the book's 9.1 / 9.2 cells (measured with --hidden 256, as the book trains them) against
their PyTorch peers (the book's scratch cell and torch's nn.GRU / nn.LSTM): a cell of k (H, H) products per step
(GRU 3, LSTM 4) costs 6 H (k H + V) FLOP per token, and its limit is the rate of its own chain of products
(GRU: h [W_hz|W_hr] then (r*h) W_hh; LSTM: h [W_hi|W_hf|W_ho|W_hc]). --depths times compiles of stacks.
"""

from rnn_jax.bench.cli import build_parser, main, parse_args

__all__ = ["build_parser", "main", "parse_args"]
