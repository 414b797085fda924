r"""FastICA speed and accuracy: nearid_jax.ica vs scikit-learn, same run.

Every ratio is against scikit-learn's `FastICA` measured in the same process
on the same data (float32, same tol, max_iter, w_init and
whiten="unit-variance"), once with its default whiten_solver="svd" and once
with "eigh" (its fastest). The Amari distance of each fit to the true mixing
is printed next to the times, so speed never buys accuracy. Both fits start
from the same w_init; ours uses its default `warm_start="auto"` (for
n >= 25,000 rows it iterates on a strided subsample first, then finishes on
all rows: its iteration count is of both stages), and a second table times
`warm_start=None`, scikit-learn's schedule, which takes (nearly) the same
number of iterations as scikit-learn. Times are per run.

The process is a default one (no XLA_FLAGS; one XLA CPU device using all
cores through its thread pool), as a user's notebook or script is. To
measure the split over one XLA device per core instead, run with
`XLA_FLAGS=--xla_force_host_platform_device_count=<cores>`.

The batch row also times `jax.jit(jax.vmap(fastica))` over the runs (what a
user writes to put ICA inside a vmapped program), which routes to the
batched implementation.

Closeness to the machine's limit: a large float32 matmul (2048^2) is timed
in the same run; the FLOP rate of our fixed-point iterations (4 n k d FLOPs
each, the two products; timed as the difference between two runs with a
fixed number of iterations) is reported as a fraction of it.

  python -m benchmarks.ica --quick            # < 1 min
  python -m benchmarks.ica                    # n=1e5, d=32/48/64; R=16 batch
  python -m benchmarks.ica --full-grid        # n=1e4..1e6 x d=16..256
  python -m benchmarks.ica --gpu-sizes        # n=1e6 d=256; R=64 n=1e5 d=64

Prints a markdown table that can be pasted into benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import os
import platform
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.decomposition import FastICA

from nearid_jax import ica


def _data(n, d, seed, runs=None):
  """x [n, d] (or [runs, n, d]) float32 of mixed sub/super-Gaussian sources."""
  rng = np.random.default_rng(seed)
  shape = (n, d) if runs is None else (runs, n, d)
  half = d // 2
  s = np.empty(shape, np.float32)
  s[..., :half] = rng.laplace(size=shape[:-1] + (half,)) / np.sqrt(2)
  s[..., half:] = rng.uniform(-np.sqrt(3), np.sqrt(3),
                              size=shape[:-1] + (d - half,))
  u, _ = np.linalg.qr(rng.normal(size=(d, d)))
  v, _ = np.linalg.qr(rng.normal(size=(d, d)))
  a = (u * np.logspace(0, -1, d)) @ v.T  # condition number 10
  x = s @ a.T.astype(np.float32)  # BLAS (einsum's loops take minutes at 1e6)
  w0 = rng.normal(size=(d, d)).astype(np.float32)
  return np.ascontiguousarray(x, np.float32), a, w0


def _amari(w, a):
  return float(ica.amari_distance(jnp.asarray(w, jnp.float32),
                                  jnp.asarray(a, jnp.float32)))


def _time(fn, repeats):
  """Best wall time of fn() over `repeats` calls (after one warm-up).

  The best, not the median: on a shared machine it is the least disturbed.
  """
  fn()
  ts = []
  for _ in range(repeats):
    t = time.perf_counter()
    fn()
    ts.append(time.perf_counter() - t)
  return float(np.min(ts))


def _ours(x, w0, tol, max_iter, **kw):
  res = ica.fastica(x, jax.random.key(0), w_init=w0, tol=tol,
                    max_iter=max_iter, **kw)
  jax.block_until_ready(res)
  return res


def _sklearn(x, w0, tol, max_iter, solver):
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    t = time.perf_counter()
    sk = FastICA(whiten="unit-variance", whiten_solver=solver, w_init=w0,
                 tol=tol, max_iter=max_iter).fit(x)
    return sk, time.perf_counter() - t


def _matmul_fn(size=2048):
  a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32)
  f = jax.jit(lambda a: jnp.matmul(a, a, precision="highest"))
  return lambda: f(a).block_until_ready(), 2 * size ** 3


def iteration_rate(x, w0, repeats, iters=(3, 13)):
  """GFLOP/s of our fixed-point iterations (4 n k d each) and of a matmul.

  The iterations are timed as the difference between runs with a fixed
  number of iterations; the 2048^2 float32 matmul is timed interleaved with
  them, so both see the same machine.
  """
  n, d = x.shape[-2:]
  runs = x.shape[0] if x.ndim == 3 else 1
  mm, mm_flops = _matmul_fn()
  fns = [mm] + [lambda m=m: _ours(x, w0, 1e-30, m, warm_start=None)
                for m in iters]
  best = [np.inf] * len(fns)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", ica.ConvergenceWarning)
    for f in fns:
      f()
    for _ in range(repeats):
      for i, f in enumerate(fns):
        t = time.perf_counter()
        f()
        best[i] = min(best[i], time.perf_counter() - t)
  per_iter = max(best[2] - best[1], 1e-9) / (iters[1] - iters[0])
  return runs * 4 * n * d * d / per_iter / 1e9, mm_flops / best[0] / 1e9


def single_run(n, d, args):
  x, a, w0 = _data(n, d, seed=n + d)
  reps = args.repeats if n * d <= 2e7 else 1
  res = _ours(x, w0, args.tol, args.max_iter)
  t_ours = _time(lambda: _ours(x, w0, args.tol, args.max_iter), reps)
  rate, peak = iteration_rate(x, w0, max(reps, 3))
  cold = _ours(x, w0, args.tol, args.max_iter, warm_start=None)
  t_cold = _time(lambda: _ours(x, w0, args.tol, args.max_iter,
                               warm_start=None), reps)
  row = dict(n=n, d=d, ours=t_ours, it=int(res.n_iter),
             am=_amari(res.unmixing, a), rate=rate, frac=rate / peak,
             cold=t_cold, cold_it=int(cold.n_iter),
             cold_am=_amari(cold.unmixing, a))
  for solver in ("svd", "eigh"):
    if args.sklearn_max_nd and n * d > args.sklearn_max_nd:
      row.update({solver: np.nan, solver + "_it": "-", solver + "_am": np.nan})
      continue
    ts = []
    for _ in range(reps):  # as many tries as ours: best of the same count
      sk, t = _sklearn(x, w0, args.tol, args.max_iter, solver)
      ts.append(t)
    row[solver] = float(np.min(ts))  # best, as for ours
    row[solver + "_it"] = sk.n_iter_
    row[solver + "_am"] = _amari(sk.components_, a)
  return row


def batch_run(runs, n, d, args, sk_runs=None):
  """R runs in one call vs scikit-learn in a loop (sk_runs measured).

  Also times jax.jit(jax.vmap(fastica)) on the same runs (row "vmapped").
  """
  x, a, w0 = _data(n, d, seed=runs, runs=runs)
  res = _ours(x, w0, args.tol, args.max_iter)
  t_ours = _time(lambda: _ours(x, w0, args.tol, args.max_iter), 1)
  xj = jax.device_put(x)
  vmapped = jax.jit(jax.vmap(lambda xr: ica.fastica(
      xr, jax.random.key(0), w_init=w0, tol=args.tol,
      max_iter=args.max_iter)))
  t_vmap = _time(lambda: jax.block_until_ready(vmapped(xj)), 1)
  res_v = vmapped(xj)
  vmap_diff = float(jnp.max(jnp.abs(res_v.unmixing - res.unmixing)))
  rate, peak = iteration_rate(x, w0, 2)
  ams = [_amari(res.unmixing[r], a) for r in range(runs)]
  row = dict(R=runs, n=n, d=d, ours=t_ours, it=int(np.max(res.n_iter)),
             am=max(ams), rate=rate, frac=rate / peak, vmap=t_vmap,
             vmap_diff=vmap_diff)
  sk_runs = runs if sk_runs is None else min(sk_runs, runs)
  for solver in ("svd", "eigh"):
    t_tot, its, am = 0.0, [], []
    for r in range(sk_runs):
      sk, t = _sklearn(x[r], w0, args.tol, args.max_iter, solver)
      t_tot += t
      its.append(sk.n_iter_)
      am.append(_amari(sk.components_, a))
    row[solver] = t_tot * runs / sk_runs
    row[solver + "_it"] = max(its)
    row[solver + "_am"] = max(am)
  row["extrapolated"] = sk_runs < runs
  return row


def _table(rows, batch):
  head = ("| " + ("R | " if batch else "") + "n | d | ours s (iters) | "
          "sklearn svd s (iters) | sklearn eigh s (iters) | x vs svd | "
          "x vs eigh | Amari ours / svd / eigh | iter GFLOP/s | "
          "matmul GFLOP/s | % of matmul |")
  lines = [head, "|" + "---|" * (head.count("|") - 1)]
  for r in rows:
    star = "*" if r.get("extrapolated") else ""
    lines.append(
        "| " + (f"{r['R']} | " if batch else "") +
        f"{r['n']:.0e} | {r['d']} | {r['ours']:.3f} ({r['it']}) | "
        f"{r['svd']:.3f}{star} ({r['svd_it']}) | "
        f"{r['eigh']:.3f}{star} ({r['eigh_it']}) | "
        f"{r['svd'] / r['ours']:.1f} | {r['eigh'] / r['ours']:.1f} | "
        f"{r['am']:.4f} / {r['svd_am']:.4f} / {r['eigh_am']:.4f} | "
        f"{r['rate']:.0f} | {r['rate'] / r['frac']:.0f} | "
        f"{100 * r['frac']:.0f}% |")
  return "\n".join(lines)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--quick", action="store_true", help="small grid, < 1 min")
  p.add_argument("--full-grid", action="store_true",
                 help="n in 1e4, 1e5, 1e6 x d in 16, 64, 256; R=16 d=64")
  p.add_argument("--gpu-sizes", action="store_true",
                 help="n=1e6 d=256 single run and R=64 runs of n=1e5 d=64")
  p.add_argument("--n", type=float, nargs="*", help="rows to try")
  p.add_argument("--d", type=int, nargs="*", help="dimensions to try")
  p.add_argument("--batch", type=int, default=16, help="R for the batch row")
  p.add_argument("--sk-runs", type=int, default=None,
                 help="scikit-learn runs actually timed in the batch row "
                      "(the rest extrapolated, marked *); default all")
  p.add_argument("--sklearn-max-nd", type=float, default=None,
                 help="skip scikit-learn (shown as nan) when n*d exceeds this")
  p.add_argument("--tol", type=float, default=1e-4)
  p.add_argument("--max-iter", type=int, default=200)
  p.add_argument("--repeats", type=int, default=3)
  args = p.parse_args(argv)

  print(f"machine: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, jax {jax.__version__}, "
        f"devices {jax.devices()}")
  mm, mm_flops = _matmul_fn()
  peak = mm_flops / _time(mm, 3) / 1e9
  # Warm up scikit-learn (imports, BLAS threads) outside the timings.
  _sklearn(*_data(2000, 8, 0)[::2], args.tol, args.max_iter, "svd")
  print(f"large float32 matmul (2048^2): {peak:.0f} GFLOP/s")

  if args.gpu_sizes:
    grid, batch = [(1_000_000, 256)], (64, 100_000, 64)
    sk_runs = args.sk_runs or 2
  elif args.quick:
    grid, batch, sk_runs = [(20_000, 16), (100_000, 64)], (4, 20_000, 16), None
  elif args.full_grid:
    grid = [(int(n), d) for n in (1e4, 1e5, 1e6) for d in (16, 64, 256)]
    batch, sk_runs = (args.batch, 100_000, 64), args.sk_runs
  else:  # issue 19's targets
    grid = [(100_000, d) for d in (32, 48, 64)]
    batch, sk_runs = (args.batch, 50_000, 32), args.sk_runs
  if args.n or args.d:
    grid = [(int(n), d) for n in (args.n or [1e5]) for d in (args.d or [64])]

  rows = []
  for n, d in grid:
    rows.append(single_run(n, d, args))
    print(f"  n={n} d={d}: ours {rows[-1]['ours']:.3f}s, sklearn svd "
          f"{rows[-1]['svd']:.3f}s eigh {rows[-1]['eigh']:.3f}s", flush=True)
  print("\nSingle runs (best time per run, seconds; float32, tol="
        f"{args.tol}, max_iter={args.max_iter}, same w_init):\n")
  print(_table(rows, batch=False))
  print("\nThe same fits with warm_start=None (scikit-learn's schedule: all "
        "rows from the first iteration):\n")
  print("| n | d | ours cold s (iters) | x vs svd | x vs eigh | Amari |")
  print("|---|---|---|---|---|---|")
  for r in rows:
    print(f"| {r['n']:.0e} | {r['d']} | {r['cold']:.3f} ({r['cold_it']}) | "
          f"{r['svd'] / r['cold']:.1f} | {r['eigh'] / r['cold']:.1f} | "
          f"{r['cold_am']:.4f} |")
  if batch[0] > 0:
    row = batch_run(*batch, args, sk_runs=sk_runs)
    note = f"; * = extrapolated from {sk_runs} timed runs" if sk_runs else ""
    print(f"\nBatch of R={batch[0]} runs in one call vs scikit-learn in a "
          f"loop (total seconds{note}):\n")
    print(_table([row], batch=True))
    print(f"\njax.jit(jax.vmap(fastica)) over the same {batch[0]} runs: "
          f"{row['vmap']:.3f} s, {row['svd'] / row['vmap']:.1f}x the "
          f"scikit-learn loop (svd), {row['eigh'] / row['vmap']:.1f}x "
          f"(eigh); largest |unmixing difference| from the batched call "
          f"{row['vmap_diff']:.1e}.")


if __name__ == "__main__":
  main()
