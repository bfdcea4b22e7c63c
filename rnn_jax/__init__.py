"""rnn_jax: character-level recurrent language models from scratch in JAX."""

__version__ = "0.1.0"
