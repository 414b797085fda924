"""The notebooks run end to end at smoke sizes, and each .ipynb matches its .py."""
import glob
import os

import pytest

jupytext = pytest.importorskip("jupytext")
nbclient = pytest.importorskip("nbclient")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(glob.glob(os.path.join(REPO, "colabs", "*.py")))


def test_there_are_notebooks():
  assert NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_ipynb_is_paired_with_py(path):
  ipynb = path[:-3] + ".ipynb"
  assert os.path.exists(ipynb), f"run: jupytext --to ipynb {path}"
  src = [c.source for c in jupytext.read(path).cells]
  paired = [c.source for c in jupytext.read(ipynb).cells]
  assert src == paired, f"{ipynb} is stale: run jupytext --sync {path}"


@pytest.mark.slow
@pytest.mark.timeout(500)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_notebook_executes(path, monkeypatch, tmp_path):
  monkeypatch.setenv("NEARID_SMOKE", "1")
  monkeypatch.setenv("PYTHONPATH", REPO)
  # One CPU device in the kernel, as in a fresh Colab runtime.
  monkeypatch.setenv("XLA_FLAGS", "")
  nb = jupytext.read(path)
  client = nbclient.NotebookClient(
      nb, timeout=450, kernel_name="python3",
      resources={"metadata": {"path": str(tmp_path)}})
  client.execute()
  errors = [o for c in nb.cells if c.cell_type == "code"
            for o in c.get("outputs", []) if o.get("output_type") == "error"]
  assert not errors
