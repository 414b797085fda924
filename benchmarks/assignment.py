r"""Linear sum assignment: nearid_jax.assignment vs optax's Hungarian, same run.

The sizes alignment uses: d x d cost matrices -|corr| (d = 4..256), solved
in a batch under `jax.jit(jax.vmap(...))` (one batch of pairs per device
group in `nearid_jax.align`). Each solver's total cost is checked against
`scipy.optimize.linear_sum_assignment` on every problem; times are the
median of repeated calls of the compiled batch (compile excluded), and the
ratio optax / ours is taken in the same process, so it survives a loaded
machine better than the absolute times.

  python -m benchmarks.assignment --quick     # d = 4, 16, 64 (< 1 min)
  python -m benchmarks.assignment             # d up to 256
"""
from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from scipy import optimize

from nearid_jax import assignment


def _ours(cost):
  return assignment.linear_sum_assignment(cost)


def _optax(cost):
  return optax.assignment.hungarian_algorithm(cost)


def _time(fn, x, repeats: int) -> float:
  jax.block_until_ready(fn(x))  # compile
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn(x))
    times.append(time.perf_counter() - t)
  return float(np.median(times))


def _optimal(costs, rows, cols) -> bool:
  for c, r, k in zip(costs, np.asarray(rows), np.asarray(cols)):
    sr, sc = optimize.linear_sum_assignment(c)
    if not np.isclose(c[r, k].sum(), c[sr, sc].sum(), rtol=1e-5, atol=1e-6):
      return False
    if len(set(k.tolist())) != len(k):
      return False
  return True


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--quick", action="store_true")
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args()
  sizes = [(4, 64), (16, 64), (64, 16)]
  if not args.quick:
    sizes += [(128, 8), (256, 4)]
  rng = np.random.default_rng(0)
  print(f"jax {jax.__version__}, optax {optax.__version__}, backend "
        f"{jax.default_backend()}")
  print("| d | batch | ours (ms) | optax (ms) | optax / ours | optimal "
        "(ours, optax) |")
  print("|---|---|---|---|---|---|")
  for d, batch in sizes:
    # -|corr| of two random representations: the matching align solves.
    a = rng.standard_normal((batch, 4 * d, d))
    b = a @ rng.standard_normal((batch, d, d)) + rng.standard_normal(
        (batch, 4 * d, d))
    corr = np.einsum("bnd,bne->bde", a, b) / np.sqrt(
        np.einsum("bnd,bnd->bd", a, a)[:, :, None]
        * np.einsum("bne,bne->be", b, b)[:, None, :])
    costs = (-np.abs(corr)).astype(np.float32)
    x = jnp.asarray(costs)
    ours = jax.jit(jax.vmap(_ours))
    theirs = jax.jit(jax.vmap(_optax))
    t_ours = _time(ours, x, args.repeats)
    t_optax = _time(theirs, x, args.repeats)
    ok_ours = _optimal(costs, *ours(x))
    ok_optax = _optimal(costs, *theirs(x))
    print(f"| {d} | {batch} | {1e3 * t_ours:.2f} | {1e3 * t_optax:.2f} | "
          f"{t_optax / t_ours:.2f} | {ok_ours}, {ok_optax} |", flush=True)


if __name__ == "__main__":
  main()
