r"""Every accelerator target in one command: ratios, MFU, one JSON file.

    python -m benchmarks.suite --accelerator   # full sizes; a GPU, < 8 min
    python -m benchmarks.suite --smoke         # CI sizes on CPU, < 2 min
    python -m benchmarks.suite                 # full on an accelerator,
                                               # smoke on a CPU-only host

Targets (full sizes), each measured against a reference in the same run:

  ica      FastICA, one run, n = 10^6, d = 256: >= 100x scikit-learn
           (its default whiten_solver="svd", and "eigh"; on the host CPU).
  epsilon  `align.pairwise_epsilon`, all four kinds, R = 64, n = 10^5,
           d = 256: < 60 s (warm; the first call, with compiles, is shown).
  metrics  `metrics.evaluate_all`, R = 64 runs of n = 10^4, d = 20: < 60 s.
  train    synthetic autoencoder, R = 64 seeds in one program vs PyTorch
           one seed after another on the same device: >= 50x seed-steps/s
           (skipped with a note when torch is not installed).
  mfu      full conv autoencoder, 8 seeds x batch 128 in one program:
           model FLOP utilisation >= 40% of the device's dense TF32 peak
           (JAX's default float32 matmul precision on GPUs); also shown
           against a float32 matmul timed here.

It reuses the benchmark modules (benchmarks/ica.py, align.py, metrics.py,
train_throughput.py), prints one line per target with the device name, and
writes `benchmarks/results/<device>.json` (`--out` to change). Sizes were
chosen so the whole suite, compiles included, fits in 8 minutes on one
H100/H200-class GPU; `--only ica,mfu` runs a subset.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import re
import time
import warnings

# The benchmark modules give XLA one host device per CPU core (harmless on
# a GPU host); import them before jax.
from benchmarks import host_devices  # noqa: F401  pylint: disable=unused-import
from benchmarks import align as align_bench
from benchmarks import ica as ica_bench
from benchmarks import metrics as metrics_bench
from benchmarks import train_throughput as train_bench
# pylint: disable=g-import-not-at-top,wrong-import-position,g-bad-import-order
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from nearid_jax import align  # noqa: E402
from nearid_jax import metrics  # noqa: E402
# pylint: enable=g-import-not-at-top,wrong-import-position,g-bad-import-order

TARGETS = ("ica", "epsilon", "metrics", "train", "mfu")

# Dense TF32 tensor-core peaks (TFLOP/s) by device kind: the precision of
# float32 convolutions and matmuls under JAX's default precision on GPUs.
_PEAK_TF32 = {"H200": 494.7, "H100": 494.7, "A100": 156.0, "L40S": 183.0,
              "L4": 60.0, "A10": 62.5}


@dataclasses.dataclass(frozen=True)
class Sizes:
  """Problem sizes of one suite run."""
  ica_n: int
  ica_d: int
  eps_runs: int
  eps_n: int
  eps_d: int
  metric_runs: int
  metric_n: int
  metric_d: int
  metric_factors: tuple
  metric_samples: int  # num_train (num_eval is half) of BetaVAE/FactorVAE
  train_seeds: int
  train_steps: int
  torch_steps: int
  conv_size: str
  conv_seeds: int
  conv_batch: int
  conv_steps: int


FULL = Sizes(ica_n=1_000_000, ica_d=256, eps_runs=64, eps_n=100_000,
             eps_d=256, metric_runs=64, metric_n=10_000, metric_d=20,
             metric_factors=metrics_bench.SIZES, metric_samples=10_000,
             train_seeds=64, train_steps=2000, torch_steps=500,
             conv_size="full", conv_seeds=8, conv_batch=128, conv_steps=50)
SMOKE = Sizes(ica_n=20_000, ica_d=16, eps_runs=3, eps_n=2_000, eps_d=6,
              metric_runs=2, metric_n=600, metric_d=6,
              metric_factors=(3, 4, 4), metric_samples=200,
              train_seeds=2, train_steps=40, torch_steps=40,
              conv_size="small", conv_seeds=1, conv_batch=4, conv_steps=1)


@dataclasses.dataclass
class Result:
  """One target's outcome."""
  name: str
  value: float | None  # the ratio, seconds or MFU fraction
  unit: str  # "x", "s" or "fraction"
  target: str
  met: bool | None  # None: not measured (note says why)
  seconds: float  # wall time of this section, compiles included
  details: dict = dataclasses.field(default_factory=dict)
  note: str = ""

  def line(self) -> str:
    if self.value is None:
      shown = "n/a"
    elif self.unit == "fraction":
      shown = f"{100 * self.value:.1f}%"
    elif self.unit == "x":
      shown = f"{self.value:.1f}x"
    else:
      shown = f"{self.value:.2f} s"
    verdict = {True: "met", False: "NOT met", None: "not measured"}[self.met]
    return (f"{self.name:8s} {shown:>9s}  (target {self.target}; {verdict}; "
            f"section {self.seconds:.0f} s)" + (f"  {self.note}"
                                                if self.note else ""))


def _best(fn, repeats: int) -> float:
  """Best wall time of fn() over `repeats` calls after a warm-up."""
  jax.block_until_ready(fn())
  ts = []
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn())
    ts.append(time.perf_counter() - t)
  return min(ts)


def run_ica(s: Sizes) -> Result:
  """One FastICA run against scikit-learn (svd and eigh) on the host."""
  x, a, w0 = ica_bench._data(s.ica_n, s.ica_d, seed=0)  # pylint: disable=protected-access
  tol, max_iter = 1e-4, 200
  xj = jax.device_put(x)
  ours = _best(lambda: ica_bench._ours(xj, w0, tol, max_iter), 3)  # pylint: disable=protected-access
  res = ica_bench._ours(xj, w0, tol, max_iter)  # pylint: disable=protected-access
  details = {"n": s.ica_n, "d": s.ica_d, "ours_s": ours,
             "ours_iters": int(res.n_iter),
             "ours_amari": ica_bench._amari(res.unmixing, a)}  # pylint: disable=protected-access
  for solver in ("svd", "eigh"):
    sk, t = ica_bench._sklearn(x, w0, tol, max_iter, solver)  # pylint: disable=protected-access
    details.update({f"sklearn_{solver}_s": t,
                    f"sklearn_{solver}_iters": int(sk.n_iter_),
                    f"sklearn_{solver}_amari":
                        ica_bench._amari(sk.components_, a)})  # pylint: disable=protected-access
  ratio = details["sklearn_svd_s"] / ours
  details["ratio_eigh"] = details["sklearn_eigh_s"] / ours
  return Result("ica", ratio, "x", ">= 100x scikit-learn (svd)",
                ratio >= 100, 0.0, details,
                f"vs eigh {details['ratio_eigh']:.1f}x; Amari ours "
                f"{details['ours_amari']:.4f}, sklearn "
                f"{details['sklearn_svd_amari']:.4f}")


@functools.partial(jax.jit, static_argnames="n")
def _eps_data(key, mixing, *, n):
  """[R, n, d] runs: one source set through R mixings, plus noise."""
  d = mixing.shape[-1]
  k1, k2, k3 = jax.random.split(key, 3)
  half = d // 2
  s = jnp.concatenate([
      jax.random.laplace(k1, (n, half)) / np.sqrt(2),
      jax.random.uniform(k2, (n, d - half), minval=-np.sqrt(3),
                         maxval=np.sqrt(3))], axis=1)
  z = jnp.einsum("nd,red->rne", s, mixing)
  return z + 0.05 * jax.random.normal(k3, z.shape)


def _mixings(r: int, d: int) -> np.ndarray:
  """[R, d, d] mixings with condition number 3 (rotations, scaled)."""
  rng = np.random.default_rng(0)
  out = np.empty((r, d, d), np.float32)
  for i in range(r):
    u, _ = np.linalg.qr(rng.normal(size=(d, d)))
    v, _ = np.linalg.qr(rng.normal(size=(d, d)))
    out[i] = (u * np.logspace(0, -0.5, d)) @ v.T
  return out


def _under_a_minute(name: str, call, details: dict) -> Result:
  """Times call() once cold (compiles) and once warm; target: warm < 60 s."""
  t = time.perf_counter()
  jax.block_until_ready(call())
  first = time.perf_counter() - t
  t = time.perf_counter()
  jax.block_until_ready(call())
  warm = time.perf_counter() - t
  return Result(name, warm, "s", "< 60 s", warm < 60, 0.0,
                {**details, "first_call_s": first},
                f"first call with compiles {first:.1f} s")


def run_epsilon(s: Sizes) -> Result:
  """All-pairs ε (four kinds) of R runs, generated on the device."""
  zs = jax.block_until_ready(_eps_data(
      jax.random.key(0), jnp.asarray(_mixings(s.eps_runs, s.eps_d)),
      n=s.eps_n))
  key = jax.random.key(1)
  return _under_a_minute(
      "epsilon", lambda: align.pairwise_epsilon(
          zs, align_bench.KINDS, key=key,
          ica_options=align_bench.ICA_OPTIONS).epsilon,
      {"runs": s.eps_runs, "n": s.eps_n, "d": s.eps_d,
       "pairs": s.eps_runs * (s.eps_runs - 1),
       "kinds": list(align_bench.KINDS)})


def run_metrics(s: Sizes) -> Result:
  """metrics.evaluate_all of R runs (whole suite but DCI-GBT)."""
  u, z = metrics_bench.make_runs(s.metric_runs, s.metric_n, s.metric_d,
                                 s.metric_factors)
  maps = metrics_bench.run_maps(s.metric_runs, s.metric_d,
                                len(s.metric_factors))
  enc = metrics_bench.make_encoder(maps, s.metric_factors)
  samp = metrics_bench.make_sampler(s.metric_factors)
  kw = dict(num_train=s.metric_samples, num_eval=s.metric_samples // 2)
  return _under_a_minute(
      "metrics", lambda: metrics.evaluate_all(
          z, u, encode_fn=enc, sample_fn=samp,
          factor_sizes=s.metric_factors, intervention_kwargs=kw),
      {"runs": s.metric_runs, "n": s.metric_n, "d": s.metric_d,
       "factor_sizes": list(s.metric_factors)})


def run_train(s: Sizes) -> Result:
  """Seed-steps/s: R seeds in one program vs PyTorch seed by seed."""
  ours = s.train_seeds * s.train_steps / train_bench.time_vmapped(
      s.train_seeds, s.train_steps)
  device = "cuda" if jax.default_backend() == "gpu" else "cpu"
  t_torch = train_bench.time_torch(1, s.torch_steps, device=device)
  details = {"seeds": s.train_seeds, "steps": s.train_steps,
             "ours_seed_steps_per_s": ours, "torch_device": device}
  if t_torch is None:
    return Result("train", None, "x", ">= 50x PyTorch", None, 0.0, details,
                  f"ours {ours:,.0f} seed-steps/s; PyTorch not installed "
                  f"(pip install '.[bench]') so no ratio")
  theirs = s.torch_steps / t_torch  # one seed after another: per-seed rate
  details["torch_seed_steps_per_s"] = theirs
  ratio = ours / theirs
  return Result("train", ratio, "x", ">= 50x PyTorch (same device)",
                ratio >= 50, 0.0, details,
                f"ours {ours:,.0f} vs PyTorch ({device}) {theirs:,.0f} "
                f"seed-steps/s")


def _matmul_tflops() -> float:
  """A large float32 matmul's rate at JAX's default precision."""
  size = 8192 if jax.default_backend() == "gpu" else 1024
  a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32)
  f = jax.jit(lambda m: m @ m)
  return 2 * size ** 3 / _best(lambda: f(a), 3) / 1e12


def run_mfu(s: Sizes, peak_tflops: float | None) -> Result:
  """Model FLOP utilisation of the conv autoencoder, seeds in one program."""
  config = train_bench.image_config("conv", s.conv_seeds, s.conv_steps,
                                    s.conv_batch, "shapes3d", s.conv_size)
  flops = train_bench.flops_per_image(config)
  t = train_bench.time_images(config, one_by_one=False)
  achieved = s.conv_seeds * s.conv_steps * s.conv_batch * flops / t / 1e12
  matmul = _matmul_tflops()
  kind = jax.devices()[0].device_kind
  peak = peak_tflops or next(
      (v for k, v in _PEAK_TF32.items() if k.lower() in kind.lower()), None)
  details = {"model": f"conv AE ({s.conv_size})", "seeds": s.conv_seeds,
             "batch": s.conv_batch, "gflop_per_image": flops / 1e9,
             "achieved_tflops": achieved, "matmul_tflops": matmul,
             "peak_tflops": peak, "of_matmul": achieved / matmul}
  note = (f"{achieved:.1f} TFLOP/s, {100 * achieved / matmul:.0f}% of a "
          f"float32 matmul here ({matmul:.1f} TFLOP/s)")
  if peak is None:
    return Result("mfu", None, "fraction", ">= 40% of peak", None, 0.0,
                  details, note + f"; peak of {kind!r} unknown "
                  "(pass --peak_tflops)")
  mfu = achieved / peak
  return Result("mfu", mfu, "fraction", f">= 40% of {peak:g} TFLOP/s",
                mfu >= 0.4 if jax.default_backend() == "gpu" else None,
                0.0, details, note)


def device_name() -> str:
  """The first device's kind, as a file name (e.g. "NVIDIA_H200")."""
  kind = jax.devices()[0].device_kind
  if jax.default_backend() == "cpu":
    kind = f"cpu-{os.cpu_count()}"
  return re.sub(r"[^A-Za-z0-9_.-]+", "_", kind).strip("_")


def run(smoke: bool, only=TARGETS, out: str | None = None,
        peak_tflops: float | None = None, log=print) -> dict:
  """Runs the chosen targets; returns (and writes) the results document.

  Args:
    smoke: CI sizes (else the full sizes of the module doc).
    only: target names to run, in TARGETS order.
    out: JSON path; None: benchmarks/results/<device>.json; "" writes none.
    peak_tflops: the device's peak for MFU (None: from the device kind).
    log: where the per-target lines go.

  Returns:
    {"device", "backend", "smoke", "results": [...], "total_s"}.
  """
  unknown = set(only) - set(TARGETS)
  if unknown:
    raise ValueError(f"unknown targets {sorted(unknown)}; choose from "
                     f"{', '.join(TARGETS)}.")
  sizes = SMOKE if smoke else FULL
  kind = jax.devices()[0].device_kind
  log(f"device: {kind} ({jax.default_backend()}, {jax.device_count()} "
      f"device(s)); {'smoke' if smoke else 'full'} sizes")
  fns = {"ica": lambda: run_ica(sizes), "epsilon": lambda: run_epsilon(sizes),
         "metrics": lambda: run_metrics(sizes),
         "train": lambda: run_train(sizes),
         "mfu": lambda: run_mfu(sizes, peak_tflops)}
  results = []
  t_all = time.perf_counter()
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # convergence chatter of the references
    for name in TARGETS:
      if name not in only:
        continue
      t = time.perf_counter()
      r = fns[name]()
      r.seconds = time.perf_counter() - t
      log(f"[{kind}] {r.line()}")
      results.append(r)
  doc = {"device": kind, "backend": jax.default_backend(), "smoke": smoke,
         "jax": jax.__version__, "sizes": dataclasses.asdict(sizes),
         "results": [dataclasses.asdict(r) for r in results],
         "total_s": time.perf_counter() - t_all}
  log(f"total {doc['total_s']:.0f} s")
  if out is None:
    out = os.path.join(os.path.dirname(__file__), "results",
                       f"{device_name()}{'-smoke' if smoke else ''}.json")
  if out:
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
      json.dump(doc, f, indent=1)
    log(f"wrote {out}")
  return doc


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  size = p.add_mutually_exclusive_group()
  size.add_argument("--accelerator", action="store_true",
                    help="full sizes (needs a GPU/TPU to finish in minutes)")
  size.add_argument("--smoke", action="store_true", help="CI sizes on CPU")
  p.add_argument("--only", default=",".join(TARGETS),
                 help=f"comma-separated subset of {','.join(TARGETS)}")
  p.add_argument("--out", default=None,
                 help="JSON path (default benchmarks/results/<device>.json)")
  p.add_argument("--peak_tflops", type=float, default=None,
                 help="device peak for the MFU (default: by device kind)")
  args = p.parse_args(argv)
  accel = jax.default_backend() != "cpu"
  if args.accelerator and not accel:
    p.error("--accelerator needs a GPU or TPU (jax.default_backend() is "
            "'cpu'); use --smoke on CPU.")
  smoke = args.smoke or not (args.accelerator or accel)
  run(smoke, [t for t in args.only.split(",") if t], args.out,
      args.peak_tflops)


if __name__ == "__main__":
  main()
