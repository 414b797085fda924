"""nearid_jax.compile_cache: off at import, on where a program asks."""
import os
import subprocess
import sys

import pytest

from nearid_jax import compile_cache

_SCRIPT = """
import sys
import jax
import nearid_jax
from nearid_jax import ica, align, metrics  # noqa: F401
assert jax.config.jax_compilation_cache_dir is None, "import enabled it"
from nearid_jax import compile_cache
path = compile_cache.enable()
print(path)
if path:
  jax.block_until_ready(jax.jit(lambda x: x * 2 + 1)(jax.numpy.ones(3)))
"""


def _run(tmp_path, **env):
  env = {**{k: v for k, v in os.environ.items()
            if k not in (compile_cache.PATH_ENV, compile_cache.DISABLE_ENV,
                         "XLA_FLAGS")},
         "XDG_CACHE_HOME": str(tmp_path / "xdg"), "JAX_PLATFORMS": "cpu",
         **env}
  out = subprocess.run([sys.executable, "-c", _SCRIPT], env=env, check=True,
                       capture_output=True, text=True, timeout=300)
  return out.stdout.strip().splitlines()[-1]


def test_enable_writes_compiled_programs_under_the_user_cache(tmp_path):
  path = _run(tmp_path)
  assert path == str(tmp_path / "xdg" / "nearid_jax" / "jax")
  assert os.listdir(path), "no compiled program was written"
  # The switch leaves it off; an explicit directory wins over the default.
  assert _run(tmp_path, **{compile_cache.DISABLE_ENV: "0"}) == "None"
  other = tmp_path / "other"
  assert _run(tmp_path, **{compile_cache.PATH_ENV: str(other)}) == str(other)


def test_unwritable_directory_is_named(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("")
  with pytest.raises(ValueError, match="cannot be created"):
    compile_cache.enable(blocker / "sub")
