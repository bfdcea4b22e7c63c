"""`python -m rnn_jax.bench`: runs the command line."""

import sys

from rnn_jax.bench.cli import main

sys.exit(main())
