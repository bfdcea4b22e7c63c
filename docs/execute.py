"""Executes notebooks in a fresh kernel and stores them with their outputs: python docs/execute.py docs/tour.ipynb

Each runs from a temporary folder, so the run directories it writes are not left behind."""

import sys
import tempfile
import time

import nbformat
from nbclient import NotebookClient


def execute(path: str, cwd: str, timeout: int = 600) -> nbformat.NotebookNode:
    """The notebook at `path` executed top to bottom in a new python3 kernel started in `cwd`."""
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:  # no timestamps: a re-run changes the file only where outputs change
        cell.metadata.pop("execution", None)
    NotebookClient(
        nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": cwd}}, record_timing=False
    ).execute()
    return nb


if __name__ == "__main__":
    for path in sys.argv[1:]:
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as cwd:
            nb = execute(path, cwd)
        nbformat.write(nb, path)
        print(f"{path}: executed in {time.perf_counter() - t0:.1f} s")
