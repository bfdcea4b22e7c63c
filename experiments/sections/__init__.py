"""The sections of experiments/RESULTS.md and the README's results block, one module each (written by
experiments/report.py)."""
