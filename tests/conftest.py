import os
from pathlib import Path

# Rank promotion is an error in the suite: a broadcast the code means is written out (an explicit reshape or
# broadcast_to), so one that slips in by accident fails loudly. The environment carries it to subprocesses.
os.environ["JAX_NUMPY_RANK_PROMOTION"] = "raise"

import jax  # noqa: E402 (after the environment it reads)
import numpy as np  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")

REPO = Path(__file__).resolve().parent.parent


def _data_dir() -> Path:
    env = os.environ.get("RNN_JAX_DATA_DIR")
    return (Path(env) if env else REPO.parent / "shared" / "data").resolve()  # tests may run from other folders


DATA_DIR = _data_dir()
TIME_MACHINE = DATA_DIR / "timemachine.txt"
WAR_OF_THE_WORLDS = DATA_DIR / "war_of_the_worlds.txt"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not TIME_MACHINE.is_file():
        pytest.fail(
            f"the tests read the corpus from {DATA_DIR}; set RNN_JAX_DATA_DIR to a directory holding timemachine.txt"
        )
    return DATA_DIR


def _small_text(chars: int = 12_000, seed: int = 0) -> str:
    """Lines of random lowercase words: text whose content no test depends on (no 35-character window repeats)."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    words, size = [], 0
    while size < chars:
        words.append("".join(rng.choice(letters, rng.integers(1, 10))))
        size += len(words[-1]) + 1
    return "\n".join(" ".join(words[i : i + 10]) for i in range(0, len(words), 10)) + "\n"


@pytest.fixture(scope="session")
def small_text(tmp_path_factory) -> Path:
    """A 12 kB text file for the tests of data plumbing (files, vocabularies, minibatches) that work on any text;
    the corpus (`data_dir`) is for the tests whose figures depend on the book."""
    path = tmp_path_factory.mktemp("text") / "small.txt"
    path.write_text(_small_text(), encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def test_log(tmp_path_factory, monkeypatch) -> Path:
    """Every test writes its test-part scorings to a log of its own, never to the repository's."""
    path = tmp_path_factory.mktemp("log") / "test_log.jsonl"
    monkeypatch.setenv("RNN_JAX_TEST_LOG", str(path))
    return path


@pytest.fixture
def key():
    return jax.random.key(0)


def pytest_addoption(parser):
    parser.addoption(
        "--full",
        action="store_true",
        help="also run the tests marked full: the book's whole runs, minutes each (make reproduce)",
    )


def pytest_collection_modifyitems(config, items):
    skip_full = pytest.mark.skip(reason="the book's whole run, minutes: run it with --full (make reproduce)")
    for item in items:
        if item.get_closest_marker("full") and not config.getoption("full"):
            item.add_marker(skip_full)
