"""The notebooks run end to end at smoke sizes and show their figures.

Each colabs/*.py (jupytext, the source of truth) must match its .ipynb, and
executing it in a fresh kernel, as Jupyter or Colab would, must raise no
error and give every cell that draws (calls `plotting.`) an inline PNG. The
kernel gets Jupyter's own matplotlib backend: the test does not force one,
so a library call that switched backends or drew through pyplot would lose
its figure here as it would in a notebook.
"""
import glob
import os
import re

import pytest

jupytext = pytest.importorskip("jupytext")
nbclient = pytest.importorskip("nbclient")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(glob.glob(os.path.join(REPO, "colabs", "*.py")))
_DRAWS = re.compile(r"\bplotting\.plot_\w+\(")


def test_there_are_notebooks():
  assert NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_ipynb_is_paired_with_py(path):
  ipynb = path[:-3] + ".ipynb"
  assert os.path.exists(ipynb), f"run: jupytext --to ipynb {path}"
  src = [c.source for c in jupytext.read(path).cells]
  paired = [c.source for c in jupytext.read(ipynb).cells]
  assert src == paired, f"{ipynb} is stale: run jupytext --sync {path}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_notebook_is_colab_ready(path):
  text = open(path, encoding="utf-8").read()
  name = os.path.basename(path)[:-3]
  assert (f"colab.research.google.com/github/nearid-jax/nearid_jax/blob/main/"
          f"colabs/{name}.ipynb") in text, "Open-in-Colab badge"
  assert "import google.colab" in text and "--no-deps" in text, (
      "a Colab install cell that keeps Colab's JAX")
  assert "jax.devices()" in text and "Recommended runtime" in text
  assert 'os.environ.get("NEARID_SMOKE")' in text
  assert "matplotlib.use" not in text and "pyplot" not in text


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_notebook_executes_with_inline_figures(path, monkeypatch, tmp_path):
  monkeypatch.setenv("NEARID_SMOKE", "1")
  monkeypatch.setenv("PYTHONPATH", REPO)
  # One CPU device in the kernel, as in a fresh Colab runtime, and Jupyter's
  # own backend (conftest's MPLBACKEND=Agg is for this process only).
  monkeypatch.setenv("XLA_FLAGS", "")
  monkeypatch.delenv("MPLBACKEND", raising=False)
  nb = jupytext.read(path)
  client = nbclient.NotebookClient(
      nb, timeout=540, kernel_name="python3",
      resources={"metadata": {"path": str(tmp_path)}})
  client.execute()
  code = [c for c in nb.cells if c.cell_type == "code"]
  errors = [o for c in code for o in c.get("outputs", [])
            if o.get("output_type") == "error"]
  assert not errors
  drawing = [c for c in code if _DRAWS.search(c.source)]
  assert drawing, "a notebook shows at least one figure"
  for c in drawing:
    kinds = [k for o in c.get("outputs", []) for k in o.get("data", {})]
    assert "image/png" in kinds, (
        f"no inline figure from the cell:\n{c.source}\n(outputs: {kinds})")
