"""nearid_jax.compile_cache: off at import, on where a program asks."""
import os
import subprocess
import sys

import jax
import pytest

from nearid_jax import compile_cache

_SCRIPT = """
import jax
import nearid_jax
from nearid_jax import align, ica  # noqa: F401
assert jax.config.jax_compilation_cache_dir is None, "import enabled it"
from nearid_jax import compile_cache
path = compile_cache.enable()
jax.block_until_ready(jax.jit(lambda x: x * 2 + 1)(jax.numpy.ones(3)))
print(path)
"""


def test_enable_writes_compiled_programs_under_the_user_cache(tmp_path):
  env = {k: v for k, v in os.environ.items()
         if k not in (compile_cache.PATH_ENV, compile_cache.DISABLE_ENV,
                      "XLA_FLAGS")}
  env.update(XDG_CACHE_HOME=str(tmp_path), JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-c", _SCRIPT], env=env, check=True,
                       capture_output=True, text=True, timeout=300)
  path = out.stdout.strip().splitlines()[-1]
  assert path == str(tmp_path / "nearid_jax" / "jax")
  assert os.listdir(path), "no compiled program was written"


def test_path_precedence_and_switch(tmp_path, monkeypatch):
  monkeypatch.delenv(compile_cache.PATH_ENV, raising=False)
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
  assert compile_cache.default_path() == str(
      tmp_path / "xdg" / "nearid_jax" / "jax")
  monkeypatch.setenv(compile_cache.PATH_ENV, str(tmp_path / "mine"))
  assert compile_cache.default_path() == str(tmp_path / "mine")
  # Switched off: nothing is created and the config is left alone.
  before = jax.config.jax_compilation_cache_dir
  monkeypatch.setenv(compile_cache.DISABLE_ENV, "off")
  assert compile_cache.enable(tmp_path / "unused") is None
  assert not (tmp_path / "unused").exists()
  assert jax.config.jax_compilation_cache_dir == before


def test_unwritable_directory_is_named(tmp_path, monkeypatch):
  monkeypatch.delenv(compile_cache.DISABLE_ENV, raising=False)
  blocker = tmp_path / "file"
  blocker.write_text("")
  with pytest.raises(ValueError, match="cannot be created"):
    compile_cache.enable(blocker / "sub")
