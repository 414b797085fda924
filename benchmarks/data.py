"""Data throughput: procedural rendering on device vs stored array_record.

Measures, in one run on one machine:
  1. images/s of each procedural set's `sample(key, 256)` (jitted);
  2. images/s of the host pipeline reading a prepared array_record copy of
     Shapes3D (PNG decode + shuffle + device put), the stored alternative;
  3. the renderer's share of a train step of a small conv autoencoder
     (64x64x3, batch 256): sampling time / train-step time (target < 10%),
     and the step with sampling fused inside the same jit vs fed a batch.

    python -m benchmarks.data            # full
    python -m benchmarks.data --quick    # < 1 min

Prints the machine and a markdown table for benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from nearid_jax.data import builders
from nearid_jax.data import cells
from nearid_jax.data import procedural
from nearid_jax.data import tfds_sources


class ConvAE(nn.Module):
  """A small conv autoencoder (the image models are not written yet)."""
  latent: int = 10

  @nn.compact
  def __call__(self, x):
    h = x
    for f in (32, 32, 64, 64):
      h = nn.relu(nn.Conv(f, (4, 4), strides=2)(h))
    z = nn.Dense(self.latent)(h.reshape(h.shape[0], -1))
    h = nn.relu(nn.Dense(4 * 4 * 64)(z)).reshape(-1, 4, 4, 64)
    for f in (64, 32, 32):
      h = nn.relu(nn.ConvTranspose(f, (4, 4), strides=(2, 2))(h))
    return nn.ConvTranspose(x.shape[-1], (4, 4), strides=(2, 2))(h)


def _time(fn, reps: int) -> float:
  """Median seconds per call of fn() (which blocks), after one warm-up."""
  fn()
  ts = []
  for _ in range(reps):
    t = time.perf_counter()
    fn()
    ts.append(time.perf_counter() - t)
  return float(np.median(ts))


def bench_render(ds, batch: int, reps: int) -> float:
  f = jax.jit(lambda k: ds.sample(k, batch)[0])
  keys = iter(jax.random.split(jax.random.key(0), reps + 2))
  return _time(lambda: f(next(keys)).block_until_ready(), reps)


def bench_pipeline(ds, n_rows: int, batch: int, n_batches: int) -> tuple[
    float, float]:
  """(seconds per batch of the host pipeline, seconds to write the copy)."""
  d = tempfile.mkdtemp(prefix="nearid_bench_")
  try:
    t = time.perf_counter()
    b = builders.materialize(ds, d, num_examples=n_rows,
                             key=jax.random.key(0))
    t_write = time.perf_counter() - t
    src = tfds_sources.from_builder(b)
    pipe = iter(tfds_sources.HostPipeline(src, batch, jax.random.key(1),
                                          num_threads=os.cpu_count() or 4))
    next(pipe)[0].block_until_ready()  # start-up
    t = time.perf_counter()
    for _ in range(n_batches):
      next(pipe)[0].block_until_ready()
    t_read = (time.perf_counter() - t) / n_batches
    pipe.close()  # stops the prefetch thread before the files go
  finally:
    shutil.rmtree(d, ignore_errors=True)
  return t_read, t_write


def bench_train(ds, batch: int, reps: int) -> dict[str, float]:
  model = ConvAE()
  x0 = jnp.zeros((batch,) + ds.observation_shape)
  params = model.init(jax.random.key(0), x0)
  opt = optax.adam(1e-3)
  state = (params, opt.init(params))

  def loss(p, x):
    return jnp.mean((model.apply(p, x) - x) ** 2)

  def update(state, x):
    p, s = state
    g = jax.grad(loss)(p, x)
    u, s = opt.update(g, s, p)
    return optax.apply_updates(p, u), s

  step = jax.jit(update)
  fused = jax.jit(lambda state, k: update(state, ds.sample(k, batch)[0]))
  x = ds.sample(jax.random.key(0), batch)[0]
  keys = iter(jax.random.split(jax.random.key(2), 2 * reps + 4))
  box = [state]

  def run_step():
    box[0] = step(box[0], x)
    jax.block_until_ready(box[0])

  def run_fused():
    box[0] = fused(box[0], next(keys))
    jax.block_until_ready(box[0])

  return {"step": _time(run_step, reps), "fused": _time(run_fused, reps)}


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--quick", action="store_true", help="< 1 min")
  p.add_argument("--batch", type=int, default=256)
  a = p.parse_args(argv)
  reps = 2 if a.quick else 10
  batch = a.batch
  print(f"machine: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, devices {jax.devices()}")

  s3 = procedural.Shapes3D()
  t = time.perf_counter()
  s3.sample(jax.random.key(0), 2)[0].block_until_ready()
  t_table = time.perf_counter() - t
  sets = [procedural.DSprites(), s3, procedural.NoisyDSprites(),
          cells.CellPainting()]
  if not a.quick:
    sets.insert(2, procedural.ColorDSprites())
  render = {ds.name: bench_render(ds, batch, reps) for ds in sets}

  n_batches = 2 if a.quick else 8
  t_read, t_write = bench_pipeline(s3, batch * (n_batches + 2), batch,
                                   n_batches)
  train = bench_train(s3, batch, reps)
  t_r = render["shapes3d"]

  rows = [("| measurement | time per batch of %d | images/s | ratio |"
           % batch), "|---|---|---|---|"]
  for name, t in render.items():
    rows.append(f"| render `{name}` (jit, on device) | {t * 1e3:.1f} ms | "
                f"{batch / t:,.0f} | |")
  rows.append(f"| read array_record Shapes3D copy (HostPipeline) | "
              f"{t_read * 1e3:.1f} ms | {batch / t_read:,.0f} | render "
              f"shapes3d is **{t_read / t_r:.1f}x** faster |")
  rows.append(f"| conv-AE train step, batch fed | {train['step'] * 1e3:.1f} "
              f"ms | | render / step = **{t_r / train['step']:.1%}** "
              f"(target < 10%) |")
  rows.append(f"| conv-AE train step, sampling fused in the jit | "
              f"{train['fused'] * 1e3:.1f} ms | | fused / fed = "
              f"{train['fused'] / train['step']:.2f} |")
  rows.append(f"| one-off: Shapes3D geometry table + compile | "
              f"{t_table:.1f} s | | |")
  rows.append(f"| one-off: write {batch * (n_batches + 2)} Shapes3D images "
              f"to array_record | {t_write:.1f} s | | |")
  print("\n".join(rows))


if __name__ == "__main__":
  main()
