import os
from pathlib import Path

import jax
import pytest

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
