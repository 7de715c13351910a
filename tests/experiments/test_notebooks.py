"""Every notebook of notebooks/ executes without error in its small mode.

Each notebook is executed with nbclient (kernel ``python3``) on a copy in a
temporary directory with ``GCA_NOTEBOOK_SMALL=1``; the saved notebooks (with
the outputs of their full mode) are never overwritten. The saved ones must
also stay small enough to read on the web.
"""

import re
import shutil
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK_DIR = Path(__file__).resolve().parents[2] / "notebooks"
NOTEBOOKS = sorted(p.name for p in NOTEBOOK_DIR.glob("*.ipynb"))
MAX_SAVED_BYTES = 1_000_000


def test_the_four_notebooks_exist():
  assert set(NOTEBOOKS) >= {"transport_plans.ipynb", "identities_and_convergence.ipynb",
                            "alignment_uniformity.ipynb", "domain_targets.ipynb"}


@pytest.mark.parametrize("name", NOTEBOOKS)
@pytest.mark.slow
def test_notebook_runs_in_small_mode(name, tmp_path, monkeypatch):
  copy = tmp_path / name
  shutil.copy(NOTEBOOK_DIR / name, copy)
  notebook = nbformat.read(copy, as_version=4)
  # The kernel inherits this process's environment.
  monkeypatch.setenv("GCA_NOTEBOOK_SMALL", "1")
  monkeypatch.setenv("MPLBACKEND", "Agg")
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                   resources={"metadata": {"path": str(tmp_path)}})
  client.execute()  # raises CellExecutionError on the first failing cell
  errors = [output for cell in notebook.cells if cell.cell_type == "code"
            for output in cell.get("outputs", []) if output.get("output_type") == "error"]
  assert not errors


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_saved_notebook_has_outputs_and_is_small(name):
  path = NOTEBOOK_DIR / name
  assert path.stat().st_size < MAX_SAVED_BYTES
  notebook = nbformat.read(path, as_version=4)
  code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
  assert all(cell.get("execution_count") for cell in code_cells), "saved without executing"
  assert not [o for cell in code_cells for o in cell.get("outputs", [])
              if o.get("output_type") == "error"]
  assert any("image/png" in o.get("data", {}) for cell in code_cells
             for o in cell.get("outputs", [])), "no figure in the saved notebook"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_imports_only_installed_packages(name):
  """A notebook runs next to an installed wheel: it imports no checkout module
  (``experiments``, ``tests``) and does not reach the checkout through sys.path."""
  notebook = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
  code = "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "code")
  assert not re.search(r"^\s*(from|import)\s+(experiments|tests)\b", code, re.M)
  assert "sys.path" not in code
