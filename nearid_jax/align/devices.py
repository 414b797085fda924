"""Where alignment work meets devices: asked of `nearid_jax.parallel`.

Alignment makes no backend decision of its own. The chunk budget is the
policy's `chunk_bytes` (`parallel.Policy`); the pairs, like the runs, are
spread over the execution layer's devices with its padding rule
(`parallel.run_layout`), so the per-run statistics, the ICA and the pairs
of one job live on the same devices and their results meet with no copy
through the host; host entry points hold single-threaded LAPACK while they
run (`parallel.host_call`).
"""
from __future__ import annotations

import jax

from nearid_jax import parallel


def _budget() -> int:
  """Intermediate bytes per chunk of pairs (`Policy.chunk_bytes`)."""
  return parallel.policy().chunk_bytes


def _take(tree, i):
  """Run i of every leaf of a stacked pytree."""
  return jax.tree.map(lambda a: a[i], tree)


def _pair_layout(n_pairs: int) -> parallel.RunLayout:
  """The pairs as the layer lays out runs: padded to a multiple of its
  devices (the runs' own, so one program holding both uses one set)."""
  return parallel.run_layout(n_pairs)


def _to_pair_devices(args):
  """Arrays the caller committed elsewhere, onto the layer's devices."""
  return parallel.on_devices(args)
