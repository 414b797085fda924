"""Benchmark: the disentanglement metric suite on device vs scikit-learn.

    python -m benchmarks.metrics            # n=10,000, d=20, K=6, R=1 and 16
    python -m benchmarks.metrics --quick    # small sizes, < 1 minute

For R = 1 and R = `--runs` synthetic runs (codes of n points, d latents,
K = 6 factors with dSprites-like cardinalities 3, 6, 40, 32, 32, 8; runs
range from a permuted rescaled copy of the factors to a random rotation with
noise), it times `metrics.evaluate_all` (the whole suite except DCI-GBT:
InfoMEC, on-device DCI, MIG, SAP, modularity/explicitness, MCC Pearson and
Spearman, R^2, UDR, BetaVAE and FactorVAE on a synthetic fixed-factor
sampler) and the same metrics computed with the scikit-learn/SciPy
references of tests/sklearn_metrics.py plus disentanglement_lib-style
numpy loops for BetaVAE/FactorVAE, in the same run (wall-clock and process CPU time; on a shared machine the
CPU-time ratio is the steadier one). The reference is a loop
over runs, so it is timed on `--ref_runs` runs and scaled to R (UDR: on a
subset of run pairs, scaled by the pair count). Our times are warm
(compiled); the compile time is printed separately.

It also times DCI with the reference estimator (GradientBoostingClassifier)
on one run, and measures how closely the on-device DCI ranks runs like
DCI-GBT: Spearman correlation over `--agree_runs` runs of D and C.
The last lines are a markdown table for benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import warnings

from benchmarks import host_devices  # noqa: F401  (before jax)

# pylint: disable=g-import-not-at-top,wrong-import-position
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402

from nearid_jax import metrics  # noqa: E402
# pylint: enable=g-import-not-at-top,wrong-import-position

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
import sklearn_metrics as ref  # noqa: E402  pylint: disable=g-import-not-at-top

SIZES = (3, 6, 40, 32, 32, 8)
QUICK_SIZES = (3, 6, 8, 8, 8, 4)


def make_runs(num_runs, n, d, sizes, seed=0):
  """Factors [n, K] and codes [R, n, d] of increasing entanglement."""
  rng = np.random.default_rng(seed)
  k = len(sizes)
  u = np.stack([rng.integers(0, c, n) for c in sizes], 1)
  maps = run_maps(num_runs, d, k, seed)
  s = (u - (np.array(sizes) - 1) / 2.0) / np.array(sizes)
  z = np.einsum("nk,rkd->rnd", s, maps)
  noise = np.linspace(0.02, 0.3, num_runs)[:, None, None]
  z = z + noise * rng.standard_normal(z.shape)
  return u, z.astype(np.float32)


def run_maps(num_runs, d, k, seed=0):
  """[R, K, d] linear maps: permuted copies blended into random rotations."""
  rng = np.random.default_rng(seed + 1)
  maps = []
  for r in range(num_runs):
    w = r / max(num_runs - 1, 1)
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    e = np.zeros((k, d))
    e[np.arange(k), rng.permutation(d)[:k]] = rng.uniform(0.5, 2.0, k)
    maps.append((1 - w) * e + w * e @ q)
  return np.stack(maps)


def make_sampler(sizes):
  sizes_arr = jnp.asarray(sizes)

  def sample_fn(key, factor, values):
    m = values.shape[0]
    u = jnp.floor(jax.random.uniform(key, (m, len(sizes))) *
                  sizes_arr).astype(jnp.int32)
    return u.at[:, factor].set(values).astype(jnp.float32)

  return sample_fn


def make_encoder(maps, sizes):
  sz = np.array(sizes, np.float32)
  maps_j = jnp.asarray(maps, jnp.float32)

  def encode_fn(obs):
    s = (obs - (sz - 1) / 2.0) / sz
    return jnp.einsum("mk,rkd->rmd", s, maps_j)

  return encode_fn


def _ref_beta_vae(maps_r, sizes, rng, batch, num_train, num_eval):
  sz = np.array(sizes, np.float64)
  enc = lambda u: ((u - (sz - 1) / 2) / sz) @ maps_r

  def points(num):
    xs, ys = [], []
    for _ in range(num):
      k = rng.integers(len(sizes))
      f1 = np.stack([rng.integers(0, c, batch) for c in sizes], 1)
      f2 = np.stack([rng.integers(0, c, batch) for c in sizes], 1)
      f2[:, k] = f1[:, k]
      xs.append(np.mean(np.abs(enc(f1) - enc(f2)), 0))
      ys.append(k)
    return np.array(xs), np.array(ys)

  x_tr, y_tr = points(num_train)
  x_ev, y_ev = points(num_eval)
  return ref.beta_vae_classifier(x_tr, y_tr, x_ev, y_ev)


def _ref_factor_vae(maps_r, sizes, rng, batch, num_train, num_eval,
                    num_var):
  sz = np.array(sizes, np.float64)
  enc = lambda u: ((u - (sz - 1) / 2) / sz) @ maps_r
  sample = lambda m: np.stack([rng.integers(0, c, m) for c in sizes], 1)
  gvar = np.var(enc(sample(num_var)), axis=0, ddof=1)
  active = np.sqrt(gvar) >= 0.05

  def votes(num):
    v = np.zeros((len(sizes), maps_r.shape[1]), np.int64)
    for _ in range(num):
      k = rng.integers(len(sizes))
      f = sample(batch)
      f[:, k] = f[0, k]
      lv = np.var(enc(f), axis=0, ddof=1)
      v[k, np.argmin(lv[active] / gvar[active])] += 1
    return v

  tr, ev = votes(num_train), votes(num_eval)
  cls = np.argmax(tr, axis=0)
  cols = np.arange(tr.shape[1])
  return (np.sum(tr[cls, cols]) / np.sum(tr), np.sum(ev[cls, cols]) /
          np.sum(ev))


def reference_suite(z, u, maps, sizes, args, rng):
  """Per-metric (wall, CPU) seconds of the references on the given runs."""
  t, cpu = {}, {}
  perm = np.asarray(jax.random.permutation(jax.random.key(0), z.shape[1]))
  n_test = round(z.shape[1] / 3)
  te, tr = perm[:n_test], perm[n_test:]

  def clock(name, fn):
    t0, c0 = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")
      fn()
    t[name] = t.get(name, 0.0) + time.perf_counter() - t0
    cpu[name] = cpu.get(name, 0.0) + time.process_time() - c0

  for r in range(z.shape[0]):
    zr = z[r].astype(np.float64)
    clock("infomec", lambda: ref.infomec(zr, u))
    clock("dci (L1 logistic)", lambda: ref.dci_l1_logistic(
        zr[tr], u[tr], zr[te], u[te]))
    clock("mig", lambda: ref.mig(zr, u))
    clock("sap", lambda: ref.sap(zr[tr], u[tr], zr[te], u[te]))
    clock("modularity_explicitness", lambda: (
        ref.modularity(zr, u),
        ref.explicitness(zr[tr], u[tr], zr[te], u[te])))
    clock("mcc", lambda: (ref.mcc(zr, u), ref.mcc(zr, u, "spearman")))
    clock("r2", lambda: ref.r2(zr[tr], u[tr].astype(float), zr[te],
                               u[te].astype(float)))
    clock("beta_vae", lambda: _ref_beta_vae(
        maps[r], sizes, rng, 64, args.num_train, args.num_eval))
    clock("factor_vae", lambda: _ref_factor_vae(
        maps[r], sizes, rng, 64, args.num_train, args.num_eval,
        args.num_train))
  return t, cpu


def ours_by_metric(z, u, enc, samp, sizes, args):
  """Warm per-metric seconds of nearid_jax.metrics on all runs at once."""
  key = jax.random.key(0)
  kw = dict(num_train=args.num_train, num_eval=args.num_eval)
  calls = {
      "infomec": lambda: metrics.infomec(z, u),
      "dci (L1 logistic)": lambda: metrics.dci(z, u),
      "mig": lambda: metrics.mig(z, u),
      "sap": lambda: metrics.sap(z, u),
      "modularity_explicitness": lambda: metrics.modularity_explicitness(
          z, u),
      "mcc": lambda: (metrics.mcc(z, u), metrics.mcc(z, u,
                                                     method="spearman")),
      "r2": lambda: metrics.r2(z, u),
      "udr": lambda: metrics.udr(z) if z.shape[0] > 1 else None,
      "beta_vae": lambda: metrics.beta_vae_score(
          enc, samp, key, factor_sizes=sizes, **kw),
      "factor_vae": lambda: metrics.factor_vae_score(
          enc, samp, key, factor_sizes=sizes,
          num_variance_estimate=args.num_train, **kw),
  }
  compile_s, warm, cpu = {}, {}, {}
  for name, fn in calls.items():
    t0 = time.perf_counter()
    fn()
    compile_s[name] = time.perf_counter() - t0
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    warm[name] = time.perf_counter() - t0
    cpu[name] = time.process_time() - c0
  return warm, compile_s, cpu


def bench_suite(num_runs, args, sizes, rows):
  u, z = make_runs(num_runs, args.n, args.d, sizes)
  maps = run_maps(num_runs, args.d, len(sizes))
  enc, samp = make_encoder(maps, sizes), make_sampler(sizes)
  warm, compile_s, cpu = ours_by_metric(z, u, enc, samp, sizes, args)
  # The whole suite in one call, as binaries use it (compiled above).
  kw = dict(num_train=args.num_train, num_eval=args.num_eval)
  t0, c0 = time.perf_counter(), time.process_time()
  metrics.evaluate_all(z, u, encode_fn=enc, sample_fn=samp,
                       factor_sizes=sizes, intervention_kwargs=kw)
  suite_s = time.perf_counter() - t0
  suite_cpu = time.process_time() - c0

  ref_runs = min(args.ref_runs, num_runs)
  rng = np.random.default_rng(0)
  # Reference cost depends on the run (a clean copy converges faster than a
  # noisy rotation): time runs spread over the batch.
  pick = np.unique(np.round(np.linspace(0, num_runs - 1, ref_runs)).astype(
      int))
  ref_runs = len(pick)
  ref_t, ref_cpu = reference_suite(z[pick], u, maps[pick], sizes, args, rng)
  scale = num_runs / ref_runs
  ref_t = {k: v * scale for k, v in ref_t.items()}
  ref_cpu = {k: v * scale for k, v in ref_cpu.items()}
  if num_runs > 1:
    pr = min(num_runs, args.udr_ref_runs)
    sub = np.round(np.linspace(0, num_runs - 1, pr)).astype(int)
    t0, c0 = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")
      ref.udr(z[sub].astype(np.float64))
    pairs = num_runs * (num_runs - 1) / (pr * (pr - 1))
    ref_t["udr"] = (time.perf_counter() - t0) * pairs
    ref_cpu["udr"] = (time.process_time() - c0) * pairs
  total_ref = sum(ref_t.values())
  total_ref_cpu = sum(ref_cpu.values())
  for name in ref_t:
    rows.append((num_runs, name, warm[name], ref_t[name],
                 ref_t[name] / warm[name], ref_cpu[name] / max(cpu[name],
                                                               1e-9),
                 compile_s[name] - warm[name]))
  rows.append((num_runs, "**whole suite (evaluate_all)**", suite_s, total_ref,
               total_ref / suite_s, total_ref_cpu / suite_cpu,
               sum(compile_s.values()) - sum(warm.values())))
  print(f"R={num_runs}: evaluate_all {suite_s:.2f} s ({suite_cpu:.1f} CPU-s),"
        f" references {total_ref:.1f} s ({total_ref_cpu:.1f} CPU-s; measured "
        f"on {ref_runs} run(s), scaled), ratio {total_ref / suite_s:.1f}x "
        f"wall, {total_ref_cpu / suite_cpu:.1f}x CPU time", flush=True)


def bench_gbt(args, sizes):
  """DCI-GBT time on one run, and rank agreement over runs."""
  u, z = make_runs(1, args.n, args.d, sizes)
  t0 = time.perf_counter()
  metrics.dci(z[0], u, estimator="gbt")
  gbt_one = time.perf_counter() - t0
  t0 = time.perf_counter()
  metrics.dci(z[0], u)
  ours_one = time.perf_counter() - t0  # includes compile for this shape
  u2, z2 = make_runs(args.agree_runs, args.agree_n, args.d, sizes, seed=3)
  gbt = metrics.dci(z2, u2, estimator="gbt")
  dev = metrics.dci(z2, u2)
  agree = {k: stats.spearmanr(gbt[k], dev[k]).statistic
           for k in ("disentanglement", "completeness",
                     "informativeness_test")}
  return gbt_one, ours_one, agree


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--quick", action="store_true")
  p.add_argument("--n", type=int, default=10_000)
  p.add_argument("--d", type=int, default=20)
  p.add_argument("--runs", type=int, default=16)
  p.add_argument("--ref_runs", type=int, default=2)
  p.add_argument("--udr_ref_runs", type=int, default=4)
  p.add_argument("--num_train", type=int, default=10_000)
  p.add_argument("--num_eval", type=int, default=5_000)
  p.add_argument("--agree_runs", type=int, default=8)
  p.add_argument("--agree_n", type=int, default=3_000)
  p.add_argument("--skip_gbt", action="store_true")
  args = p.parse_args(argv)
  sizes = SIZES
  if args.quick:
    args.n, args.runs, args.ref_runs, args.udr_ref_runs = 1500, 4, 1, 2
    args.num_train, args.num_eval = 500, 250
    args.agree_runs, args.agree_n = 4, 300
    sizes = QUICK_SIZES
  print(f"machine: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, jax {jax.__version__}, backend "
        f"{jax.default_backend()}, {jax.device_count()} device(s): "
        f"{jax.devices()}")
  print(f"n={args.n} d={args.d} factor sizes={sizes} runs=1,{args.runs} "
        f"BetaVAE/FactorVAE num_train={args.num_train} "
        f"num_eval={args.num_eval}", flush=True)
  rows = []
  for r in (1, args.runs):
    bench_suite(r, args, sizes, rows)
  gbt_line = ""
  if not args.skip_gbt:
    gbt_one, ours_one, agree = bench_gbt(args, sizes)
    gbt_line = (
        f"DCI-GBT (sklearn GradientBoostingClassifier, disentanglement_lib) "
        f"one run n={args.n}: {gbt_one:.1f} s; on-device DCI the same run "
        f"{ours_one:.2f} s incl. compile. Spearman rank agreement of "
        f"on-device DCI with DCI-GBT over {args.agree_runs} runs "
        f"(n={args.agree_n}): D {agree['disentanglement']:.2f}, "
        f"C {agree['completeness']:.2f}, "
        f"I_test {agree['informativeness_test']:.2f}.")
  print()
  print("| R | metric | nearid_jax (s, warm) | sklearn/scipy reference (s) "
        "| ratio (wall) | ratio (CPU time) | compile (s) |")
  print("|---|---|---|---|---|---|---|")
  for r, name, ours, theirs, ratio, cratio, comp in rows:
    print(f"| {r} | {name} | {ours:.2f} | {theirs:.1f} | {ratio:.1f}x | "
          f"{cratio:.1f}x | {comp:.1f} |")
  if gbt_line:
    print()
    print(gbt_line)


if __name__ == "__main__":
  main()
