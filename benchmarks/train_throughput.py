r"""Seed-steps per second of the multi-seed trainer vs the usual ways.

For R seeds of the default synthetic autoencoder (batch 256), measured in the
same process:
  (a) all R seeds vmapped in ONE compiled program (nearid_jax.train);
  (b) the same jitted train function called once per seed, one after another;
  (c) the same model, data and optimizer in PyTorch, one seed after another
      (the usual way; needs `pip install torch==2.13.0`).
Compile time is excluded from (a) and (b) (one warm-up chunk); PyTorch gets a
warm-up too. The table reports seed-steps per second and the ratios a/c and
a/b.

    python -m benchmarks.train_throughput            # 2000 steps, R = 1, 8, 32
    python -m benchmarks.train_throughput --quick    # 200 steps, R = 1, 8
"""
from __future__ import annotations

import argparse
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from nearid_jax import train


def _config(num_seeds: int, steps: int):
  c = train.default_config()
  c.num_seeds, c.num_steps, c.log_every = num_seeds, steps, min(steps, 500)
  c.progress, c.num_devices = False, 1
  return c


def time_vmapped(num_seeds: int, steps: int) -> float:
  """(a): seconds for `steps` steps of all seeds in one program."""
  trainer = train.Trainer(_config(num_seeds, steps))
  key = jax.random.key(0)
  state = trainer.init_jit(key)
  state, _ = trainer.chunk_jit(state, key)  # compile + warm-up
  jax.block_until_ready(state)
  t = time.perf_counter()
  for _ in range(steps // trainer.config.log_every):
    state, m = trainer.chunk_jit(state, key)
  jax.block_until_ready((state, m))
  return time.perf_counter() - t


def time_one_by_one(num_seeds: int, steps: int) -> float:
  """(b): the same jitted function, once per seed (seed = key here)."""
  trainer = train.Trainer(_config(1, steps))
  state = trainer.init_jit(jax.random.key(0))
  state, _ = trainer.chunk_jit(state, jax.random.key(0))  # compile
  jax.block_until_ready(state)
  t = time.perf_counter()
  for seed in range(num_seeds):
    key = jax.random.key(seed)
    state = trainer.init_jit(key)
    for _ in range(steps // trainer.config.log_every):
      state, m = trainer.chunk_jit(state, key)
    jax.block_until_ready((state, m))
  return time.perf_counter() - t


def time_torch(num_seeds: int, steps: int) -> float | None:
  """(c): PyTorch, one seed after another; None when torch is missing."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  c = train.default_config()
  proc = train.data_lib.build_data(c.data)
  lift = torch.tensor(np.asarray(proc.lift))
  weights = torch.tensor(np.asarray(proc.weights))
  biases = torch.tensor(np.asarray(proc.biases))
  k, d = lift.shape[1], lift.shape[0]
  slope_data, slope = c.data.negative_slope, c.model.negative_slope
  laplace = torch.distributions.Laplace(0.0, 1.0 / np.sqrt(2.0))

  def sample(n):
    h = laplace.sample((n, k)) @ lift.T
    for l in range(weights.shape[0]):
      h = h @ weights[l].T + biases[l]
      if l < weights.shape[0] - 1:
        h = torch.nn.functional.leaky_relu(h, slope_data)
    return h

  def model():
    w = c.model.encoder_widths
    layers, prev = [], d
    for width in w:
      layers += [torch.nn.Linear(prev, width), torch.nn.LeakyReLU(slope)]
      prev = width
    layers += [torch.nn.Linear(prev, k)]
    prev = k
    for width in c.model.decoder_widths:
      layers += [torch.nn.Linear(prev, width), torch.nn.LeakyReLU(slope)]
      prev = width
    layers += [torch.nn.Linear(prev, d)]
    return torch.nn.Sequential(*layers)

  def run(seed, n_steps):
    torch.manual_seed(seed)
    net = model()
    opt = torch.optim.AdamW(net.parameters(), lr=c.optimizer.learning_rate,
                            weight_decay=0.0)
    for _ in range(n_steps):
      x = sample(c.batch_size)
      loss = torch.mean((net(x) - x) ** 2)
      opt.zero_grad(set_to_none=True)
      loss.backward()
      opt.step()
    return loss.item()

  run(0, 50)  # warm-up
  t = time.perf_counter()
  for seed in range(num_seeds):
    run(seed, steps)
  return time.perf_counter() - t


def machine() -> str:
  return (f"{platform.machine()} {platform.processor() or ''} "
          f"{os.cpu_count()} CPU threads; JAX {jax.__version__} on "
          f"{jax.devices()[0].device_kind} x{jax.device_count()}").strip()


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--quick", action="store_true")
  parser.add_argument("--seeds", type=int, nargs="*", default=None)
  parser.add_argument("--steps", type=int, default=None)
  parser.add_argument("--no-torch", action="store_true")
  args = parser.parse_args()
  seeds = args.seeds or ([1, 8] if args.quick else [1, 8, 32])
  steps = args.steps or (200 if args.quick else 2000)
  print(f"Machine: {machine()}")
  print(f"Synthetic AE (16-64-64-4-64-64-16, batch 256), {steps} steps\n")
  print("| R | (a) vmapped seed-steps/s | (b) one-by-one | (c) PyTorch "
        "one-by-one | a/b | a/c |")
  print("|---|---|---|---|---|---|")
  for r in seeds:
    ta = time_vmapped(r, steps)
    tb = time_one_by_one(r, steps)
    tc = None if args.no_torch else time_torch(r, steps)
    rate = lambda t: r * steps / t
    c_txt = f"{rate(tc):,.0f}" if tc else "n/a"
    ac = f"{tc / ta:.1f}x" if tc else "n/a"
    print(f"| {r} | {rate(ta):,.0f} | {rate(tb):,.0f} | {c_txt} | "
          f"{tb / ta:.1f}x | {ac} |", flush=True)


if __name__ == "__main__":
  main()
