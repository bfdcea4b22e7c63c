"""docs/tour.ipynb runs top to bottom in a fresh kernel of this environment's python, without an error."""

import os
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

TOUR = Path(__file__).resolve().parent.parent / "docs" / "tour.ipynb"


@pytest.mark.slow
def test_the_tour_runs_in_a_fresh_kernel(tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("RNN_JAX_DATA_DIR", str(data_dir))  # the kernel inherits the environment
    nb = nbformat.read(TOUR, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("import sys; print(sys.executable)"))
    # raises CellExecutionError, with the cell and its traceback, at the first cell that fails
    nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    assert os.path.samefile(nb.cells[-1].outputs[0]["text"].strip(), sys.executable)
    assert [p.name for p in (tmp_path / "runs").iterdir()][0].startswith("tour-")  # run directories stay in cwd
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    figures = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(figures) == 3  # frequencies, the two schemes, the training curve: drawn inline, after training too
