"""The experiment scripts (`python experiments/<script>.py`) and what they share (`experiments.common`); see
experiments/RESULTS.md. A package of the checkout, not installed: a script run as a file imports the package beside
it, so its records, runs and test log land in the checkout it was run from."""
