r"""Pairwise ε for all ordered pairs: batched JAX vs a NumPy/SciPy/sklearn loop.

Both sides compute the same thing on the same data, split and diameter
rows: for every run (once) centring, the diameter (max pairwise distance
over up to 10⁴ rows) and FastICA on the fit rows; for every ordered pair the
linear (`sklearn.linear_model.LinearRegression`), rigid
(`scipy.linalg.orthogonal_procrustes`), signed-permutation
(`scipy.optimize.linear_sum_assignment` on -|corr|) and ICA maps
(`sklearn.decomposition.FastICA`, fitted once per run, not per pair), and
the mean / max / 99th-percentile error on the evaluation rows. The ratio is
the loop's time over ours, measured in the same process. The largest
difference between the two sets of ε matrices is printed too, so speed
never buys a different answer (ICA differs by its convergence tolerance).

Closeness to the machine's limit: a large float32 matmul is timed in the
same run; our FLOPs (the dominant matmul terms of the per-run, ICA and
per-pair programs, counted analytically in `_flops`) over our time is
reported as a fraction of its FLOP rate.

  python -m benchmarks.align --quick        # < 1 min (R=4, n=5e3, d=16)
  python -m benchmarks.align                # R=16, n=5e4, d=64 (the issue's)
  python -m benchmarks.align --gpu-sizes    # R=64, n=1e5, d=256, ours only
  python -m benchmarks.align --memory       # compile-only memory plan of
                                            # R=64, n=1e5, d=256 (no run)

Prints a markdown table that can be pasted into benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import os
import platform
import time
import warnings

# One XLA device per core: the pairs (and the cross-covariance product) are
# spread over them (`nearid_jax.align.pairs`).
from benchmarks import host_devices  # noqa: F401  (before jax)

# pylint: disable=g-import-not-at-top,wrong-import-position
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from nearid_jax import align  # noqa: E402
from nearid_jax.align import maps as align_maps  # noqa: E402
from nearid_jax.align import pairs as align_pairs  # noqa: E402
from nearid_jax.align import stats as align_stats  # noqa: E402
from nearid_jax import ica as ica_lib  # noqa: E402
from nearid_jax import parallel  # noqa: E402
# pylint: enable=g-import-not-at-top,wrong-import-position

KINDS = ("perm", "rigid", "linear", "ica")
ICA_OPTIONS = {"max_iter": 400, "tol": 1e-4}


def _data(runs, n, d, seed=0):
  """[runs, n, d] float32: runs = different linear mixings of one source set."""
  rng = np.random.default_rng(seed)
  half = d // 2
  s = np.empty((n, d), np.float32)
  s[:, :half] = rng.laplace(size=(n, half)) / np.sqrt(2)
  s[:, half:] = rng.uniform(-np.sqrt(3), np.sqrt(3), size=(n, d - half))
  zs = np.empty((runs, n, d), np.float32)
  for r in range(runs):
    u, _ = np.linalg.qr(rng.normal(size=(d, d)))
    v, _ = np.linalg.qr(rng.normal(size=(d, d)))
    a = (u * np.logspace(0, -0.5, d)) @ v.T
    zs[r] = s @ a.T.astype(np.float32) + 0.05 * rng.normal(
        size=(n, d)).astype(np.float32)
  return zs


def _split_rows(n, n_fit, key, diameter_rows=10_000):
  """The rows `align` uses: (fit, eval, diameter) indices."""
  k_split, k_diam, _ = jax.random.split(key, 3)
  perm = np.asarray(jax.random.permutation(k_split, n))
  diam = (np.arange(n) if n <= diameter_rows else
          np.asarray(jax.random.permutation(k_diam, n))[:diameter_rows])
  return np.sort(perm[:n_fit]), np.sort(perm[n_fit:]), diam


# --- the reference loop ------------------------------------------------------


def _reference(zs, fit, ev, diam_rows):
  """ε matrices {kind: {stat: [R, R]}} with NumPy/SciPy/sklearn, pair by pair."""
  from scipy import linalg, optimize  # pylint: disable=g-import-not-at-top
  from sklearn import decomposition, linear_model, metrics  # pylint: disable=g-import-not-at-top
  r, _, d = zs.shape
  xf, xe, raw_f, raw_e, diam, w, a = [], [], [], [], [], [], []
  for z in zs:  # once per run
    f, e = z[fit], z[ev]
    mean = f.mean(0)
    raw_f.append(f)
    raw_e.append(e)
    xf.append(f - mean)
    xe.append(e - mean)
    sub = z[diam_rows]
    diam.append(max(np.max(c) for c in
                    metrics.pairwise_distances_chunked(sub, n_jobs=1)))
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")
      model = decomposition.FastICA(
          n_components=d, whiten="unit-variance", whiten_solver="eigh",
          random_state=0, **ICA_OPTIONS).fit(xf[-1])
    w.append(model.components_)
    a.append(model.mixing_)
  out = {k: {s: np.zeros((r, r)) for s in ("mean", "max", "q99")}
         for k in KINDS}

  def corr(p, q):
    p = (p - p.mean(0)) / p.std(0)
    q = (q - q.mean(0)) / q.std(0)
    return p.T @ q / len(p)

  for t in range(r):
    for s in range(r):
      if t == s:
        continue
      preds = {}
      lr = linear_model.LinearRegression().fit(raw_f[s], raw_f[t])
      preds["linear"] = lr.predict(raw_e[s]) - (raw_f[t].mean(0))
      rot, _ = linalg.orthogonal_procrustes(xf[s], xf[t])
      preds["rigid"] = xe[s] @ rot
      c = corr(xf[t], xf[s])
      rows, cols = optimize.linear_sum_assignment(-np.abs(c))
      m = np.zeros((d, d), np.float32)
      m[rows, cols] = np.sign(c[rows, cols])
      preds["perm"] = xe[s] @ m.T
      c = corr(xf[t] @ w[t].T, xf[s] @ w[s].T)
      rows, cols = optimize.linear_sum_assignment(-np.abs(c))
      ps = np.zeros((d, d), np.float32)
      ps[rows, cols] = np.sign(c[rows, cols])
      preds["ica"] = xe[s] @ (a[t] @ ps @ w[s]).T
      for k, pred in preds.items():
        err = np.linalg.norm(xe[t] - pred, axis=1)
        out[k]["mean"][t, s] = err.mean() / diam[t]
        out[k]["max"][t, s] = err.max() / diam[t]
        out[k]["q99"][t, s] = np.quantile(err, 0.99) / diam[t]
  return out


# --- ours, by stage -----------------------------------------------------------


def _ours(zs, key, n_fit):
  """Runs the three programs of `pairwise_epsilon` (timing each)."""
  from threadpoolctl import threadpool_limits  # pylint: disable=g-import-not-at-top
  with threadpool_limits(1, user_api="blas"):  # as the public entry points
    # Warm: the stage programs see inputs laid out over the devices as they
    # come here (not quite as inside pairwise_epsilon), so the first round
    # may compile.
    _ours_stages(zs, key, n_fit)
    return _ours_stages(zs, key, n_fit)


def _ours_stages(zs, key, n_fit):
  r, n, d = zs.shape
  t0 = time.perf_counter()
  zero = jnp.zeros((), jnp.int32)  # scale exponent (ordinary data: none)
  runs = align_stats.prepare(zs, key, zero, n_fit=n_fit, diameter="max",
                             diameter_rows=10_000, ridge=0.0)
  jax.block_until_ready(runs)
  t1 = time.perf_counter()
  maps, _ = align_maps.run_ica(runs, key, d, ICA_OPTIONS, "zs", False)
  jax.block_until_ready(maps)
  t2 = time.perf_counter()
  opts = align.Options(KINDS, 0.0, False, "pad", n_fit)
  ti, si = np.nonzero(~np.eye(r, dtype=bool))
  chunks = align_pairs.chunks(len(ti), n - n_fit, d, d, len(KINDS), None)
  valid = jnp.ones((r,), bool)
  args = (runs, None, maps, None, jnp.asarray(ti, jnp.int32),
          jnp.asarray(si, jnp.int32), valid, valid)
  out = align_pairs.pairs(*args, opts=opts, chunk=chunks[0], rows=chunks[1])
  jax.block_until_ready(out)
  t3 = time.perf_counter()
  return {"prepare": t1 - t0, "ica": t2 - t1, "pairs": t3 - t2,
          "total": t3 - t0}, (args, opts, chunks)


def _flops(zs, n_fit, runs):
  """Dominant FLOPs (matmuls) of the three programs, counted analytically.

  Per run: covariance 2·n_fit·d² and the diameter's Gram blocks on and above
  the diagonal (nb(nb+1)/2 blocks of 2·b²·d, b = 1024 rows); ICA: 4·n_fit·d²
  per fixed-point iteration (its two products) plus the whitening; per
  pair: cross-covariance 2·n_fit·d² and one 2·n_eval·d² product per kind
  except "perm" (a gather). The d³ terms (eigh, SVD, assignment) are left
  out: n >> d.
  """
  r, n, d = zs.shape
  n_eval = n - n_fit
  m = min(n, 10_000)
  b = min(1024, m)
  nb = -(-m // b)
  prep = r * (2 * n_fit * d * d + nb * (nb + 1) // 2 * 2 * b * b * d)
  res = ica_lib.fastica(runs.xf, jax.random.key(0), **ICA_OPTIONS)
  iters = float(np.sum(np.asarray(res.n_iter)))
  ica = iters * 4 * n_fit * d * d + r * 4 * n_fit * d * d
  dense = len([k for k in KINDS if k != "perm"])
  pairs = r * (r - 1) * (2 * n_fit * d * d + dense * 2 * n_eval * d * d)
  return prep, ica, pairs


def _matmul_gflops(size):
  a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  jax.block_until_ready(f(a))
  ts = []
  for _ in range(3):
    t = time.perf_counter()
    jax.block_until_ready(f(a))
    ts.append(time.perf_counter() - t)
  return 2 * size ** 3 / min(ts) / 1e9


def _max_diff(ours, ref):
  out = {}
  for k in KINDS:
    out[k] = max(float(np.nanmax(np.abs(np.asarray(ours[k][s]) - ref[k][s])))
                 for s in ("mean", "max", "q99"))
  return out


def _memory(budget_chunks: bool = True):
  """Compile-only memory plan of R=64, n=1e5, d=256 (accelerator chunks)."""
  r, n, d = 64, 100_000, 256
  n_fit = n // 2
  key = jax.random.key(0)
  z = jax.ShapeDtypeStruct((r, n, d), jnp.float32)
  zero = jax.ShapeDtypeStruct((), jnp.int32)
  prep = align_stats.prepare.lower(z, key, zero, n_fit=n_fit, diameter="max",
                                   diameter_rows=10_000, ridge=0.0).compile()
  runs = jax.eval_shape(
      lambda zz, e: align_stats.prepare(zz, key, e, n_fit=n_fit,
                                        diameter="max", diameter_rows=10_000,
                                        ridge=0.0), z, zero)
  options = align_maps.ica_options(ICA_OPTIONS)
  ica_c = align_maps.fit_ica.lower(
      runs.xf, runs.sd, key, n_components=d, options=options).compile()
  maps = jax.eval_shape(
      lambda x, sd: align_maps.fit_ica(x, sd, key, n_components=d,
                                       options=options)[0], runs.xf, runs.sd)
  n_pairs = r * (r - 1)
  # Plan with the accelerator budget on this CPU when asked.
  budget = parallel.Policy.default("gpu").chunk_bytes
  with parallel.using(**({"chunk_bytes": budget} if budget_chunks else {})):
    chunks = align_pairs.chunks(n_pairs, n - n_fit, d, d, 4, None)
  idx = jax.ShapeDtypeStruct((n_pairs,), jnp.int32)
  valid = jax.ShapeDtypeStruct((r,), jnp.bool_)
  pairs = align_pairs.pairs_program.lower(
      runs, None, maps, None, idx, idx, valid, valid,
      opts=align.Options(KINDS, 0.0, False, "pad", n_fit),
      chunk=chunks[0], rows=chunks[1]).compile()
  gib = lambda b: b / 2 ** 30  # noqa: E731
  rows = []
  z_bytes = r * n * d * 4
  runs_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(runs))
  peak = 0.0
  # Live while each program runs: the caller's zs, the per-run stats the
  # later programs read, the program's outputs and temporaries.
  for name, c, live in (("per-run stats", prep, z_bytes),
                        ("ICA (all runs)", ica_c, z_bytes + runs_bytes),
                        ("pairs", pairs, z_bytes + runs_bytes)):
    m = c.memory_analysis()
    total = live + m.output_size_in_bytes + m.temp_size_in_bytes
    peak = max(peak, total)
    rows.append((name, gib(m.argument_size_in_bytes),
                 gib(m.output_size_in_bytes), gib(m.temp_size_in_bytes),
                 gib(total)))
  print(f"\nMemory plan, R={r}, n={n:.0e}, d={d}, pair chunks {chunks} "
        f"(accelerator budget), float32:\n")
  print("| program | arguments GiB | outputs GiB | temporaries GiB | "
        "live in all GiB (input + stats + outputs + temporaries) |")
  print("|---|---|---|---|---|")
  for row in rows:
    print(f"| {row[0]} | " + " | ".join(f"{v:.2f}" for v in row[1:]) + " |")
  print(f"\nPeak ≈ {gib(peak):.1f} GiB (budget 24 GiB).")


def _machine():
  return (f"{platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, jax {jax.__version__}, devices "
          f"{jax.devices()}")


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--quick", action="store_true", help="R=4, n=5e3, d=16")
  p.add_argument("--gpu-sizes", action="store_true",
                 help="R=64, n=1e5, d=256; ours only")
  p.add_argument("--memory", action="store_true",
                 help="compile-only memory plan for R=64, n=1e5, d=256")
  p.add_argument("--runs", type=int, default=16)
  p.add_argument("--rows", type=int, default=50_000)
  p.add_argument("--dim", type=int, default=64)
  p.add_argument("--no-reference", action="store_true")
  p.add_argument("--reference-threads", default="default,1",
                 help="BLAS thread settings to time the loop with "
                      "(comma-separated: 'default', '1'); the faster counts")
  args = p.parse_args()
  print(f"Machine: {_machine()}")
  if args.memory:
    _memory()
    return
  r, n, d = args.runs, args.rows, args.dim
  if args.quick:
    r, n, d = 4, 5_000, 16
    args.reference_threads = "1"  # the faster setting; keeps it < 1 min
  if args.gpu_sizes:
    r, n, d = 64, 100_000, 256
  reference = not (args.no_reference or args.gpu_sizes)
  zs = _data(r, n, d)
  n_fit = n // 2
  key = jax.random.key(0)
  zj = jnp.asarray(zs)

  t = time.perf_counter()
  first = align.pairwise_epsilon(zj, KINDS, key=key,
                                 ica_options=ICA_OPTIONS)
  jax.block_until_ready(first.epsilon)
  t_first = time.perf_counter() - t
  times = []
  for _ in range(2):
    t = time.perf_counter()
    res = align.pairwise_epsilon(zj, KINDS, key=key, ica_options=ICA_OPTIONS)
    jax.block_until_ready(res.epsilon)
    times.append(time.perf_counter() - t)
  t_ours = min(times)
  stages, pair_args = _ours(zj, key, n_fit)
  prep_f, ica_f, pairs_f = _flops(zj, n_fit, pair_args[0][0])
  mm = _matmul_gflops(2048 if args.quick else 4096)
  total_f = prep_f + ica_f + pairs_f
  print(f"\nR={r}, n={n}, d={d}, kinds {KINDS}, {r * (r - 1)} ordered pairs")
  print(f"ours: {t_ours:.2f} s (first call with compiles {t_first:.1f} s); "
        f"stages: " + ", ".join(f"{k} {v:.2f} s" for k, v in stages.items()))
  print(f"FLOPs: per-run {prep_f:.2e}, ICA {ica_f:.2e}, pairs {pairs_f:.2e}; "
        f"matmul {mm:.1f} GFLOP/s")
  t_ref = None
  if reference:
    from threadpoolctl import threadpool_limits  # pylint: disable=g-import-not-at-top
    fit, ev, diam_rows = _split_rows(n, n_fit, key)
    # The loop's small LAPACK calls (Procrustes SVDs, FastICA's
    # decorrelation) can be faster with one BLAS thread, its large products
    # with all: the ratio is against the faster of the two.
    t_refs = {}
    for threads in args.reference_threads.split(","):
      limit = (threadpool_limits(1, user_api="blas") if threads == "1"
               else threadpool_limits(None))
      with limit:
        t = time.perf_counter()
        ref = _reference(zs, fit, ev, diam_rows)
        t_refs[threads] = time.perf_counter() - t
      diff = _max_diff(res.epsilon, ref)
      print(f"NumPy/SciPy/sklearn loop (BLAS threads: {threads}): "
            f"{t_refs[threads]:.2f} s; largest |Δε| per kind: "
            + ", ".join(f"{k} {v:.1e}" for k, v in diff.items()))
    t_ref = min(t_refs.values())
  print("\n| R | n | d | kinds | ours (s) | first call (s) | NumPy/SciPy/"
        "sklearn (s) | ratio | ours GFLOP/s | matmul GFLOP/s | of matmul |")
  print("|---|---|---|---|---|---|---|---|---|---|---|")
  rate = total_f / t_ours / 1e9
  print(f"| {r} | {n:.0e} | {d} | {'/'.join(KINDS)} | {t_ours:.2f} | "
        f"{t_first:.1f} | " + (f"{t_ref:.1f} | {t_ref / t_ours:.1f}×"
                               if t_ref else "— | —")
        + f" | {rate:.1f} | {mm:.1f} | {rate / mm:.0%} |")
  pr = pairs_f / stages["pairs"] / 1e9
  print(f"\nPairs program alone: {stages['pairs']:.2f} s, {pr:.1f} GFLOP/s "
        f"({pr / mm:.0%} of the matmul rate).")


if __name__ == "__main__":
  main()
