"""The experiment scripts (`python experiments/<script>.py`) and what they share (`experiments.common`); see
experiments/RESULTS.md. Importable as a package so the scripts and the tests import each other by name."""
