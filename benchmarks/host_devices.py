"""Import before jax: one XLA host device per CPU core.

nearid_jax's execution layer (`nearid_jax.parallel`) spreads independent
runs (the trainer's, FastICA's, alignment's and the metrics'), or the rows
of one ICA run, over the local devices; on a CPU host that needs one XLA
device per core, which must be asked for before jax is imported. An explicit
--xla_force_host_platform_device_count in XLA_FLAGS is kept. On a GPU host
this only adds CPU devices, which the GPU backend does not use.
"""
import os

if "xla_force_host_platform_device_count" not in os.environ.get(
    "XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (
      os.environ.get("XLA_FLAGS", "") +
      f" --xla_force_host_platform_device_count={os.cpu_count()}").strip()
