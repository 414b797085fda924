r"""Seed-steps per second of the multi-seed trainer vs the usual ways.

For R seeds of the default synthetic autoencoder (batch 256), measured in the
same process:
  (a) all R seeds vmapped in ONE compiled program (nearid_jax.train);
  (b) the same jitted train function called once per seed, one after another;
  (c) the same model, data and optimizer in PyTorch, one seed after another
      (the usual way; needs `pip install torch==2.13.0`).
Compile time is excluded from (a) and (b) (one warm-up chunk); PyTorch gets a
warm-up too. On CPU the benchmark gives XLA one host device per core, and (a)
shards its seeds over them (see the note at the import of jax). The table reports seed-steps per second and the ratios a/c and
a/b.

With --models=conv,mae (or mlp,conv,mae) it also trains image models on
procedural 64x64 images rendered on device inside the step (Shapes3D by
default): the small conv autoencoder (sigmoid cross-entropy) and the tiny
ViT MAE (mask ratio 0.75), for R = 1, 4, 16 seeds, (a) vmapped in one
program vs (b) one seed at a time, and prints images/s per seed and in
total. --mfu adds the model FLOP utilisation: XLA's FLOP count of one
training step divided by the step time and by --peak_tflops (the device's
peak; e.g. 495 for an H100's dense TF32 tensor cores).

    python -m benchmarks.train_throughput            # 2000 steps, R = 1, 8, 32
    python -m benchmarks.train_throughput --quick    # 200 steps, R = 1, 8
    python -m benchmarks.train_throughput --models=conv,mae --quick
    # On a GPU: the full conv autoencoder, batch 128, 8 seeds in one program.
    python -m benchmarks.train_throughput --models=conv --conv_size=full \
        --image_batch=128 --seeds 8 --image_steps=50 --mfu --peak_tflops=495
"""
from __future__ import annotations

import argparse
import os
import platform
import time

# One XLA host device per core, before JAX starts: (a) shards its seeds over
# them (the trainer's "seed" mesh axis), so each core runs whole seeds; the
# single-seed programs of (b) and the image models use one device, whose
# kernels still spread over all cores through XLA's intra-op thread pool.
from benchmarks import host_devices  # noqa: F401
import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp
import numpy as np

from nearid_jax import data as data_lib
from nearid_jax import train
from nearid_jax.data import images
from nearid_jax.models import conv_ae
from nearid_jax.models import vit


def _config(num_seeds: int, steps: int, num_devices: int = 1):
  c = train.default_config()
  c.num_seeds, c.num_steps, c.log_every = num_seeds, steps, min(steps, 500)
  c.progress, c.num_devices = False, num_devices
  return c


def time_vmapped(num_seeds: int, steps: int) -> float:
  """(a): seconds for `steps` steps of all seeds in one program.

  The seeds are sharded over as many devices as divide them evenly.
  """
  n_dev = max(d for d in range(1, jax.device_count() + 1)
              if num_seeds % d == 0)
  trainer = train.Trainer(_config(num_seeds, steps, n_dev))
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


def time_torch(num_seeds: int, steps: int,
               device: str = "cpu") -> float | None:
  """(c): PyTorch, one seed after another; None when torch is missing.

  device: torch device ("cpu", or "cuda" to compare on the same GPU).
  """
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  c = train.default_config()
  proc = data_lib.build_data(c.data)
  lift = torch.tensor(np.asarray(proc.lift), device=device)
  weights = torch.tensor(np.asarray(proc.weights), device=device)
  biases = torch.tensor(np.asarray(proc.biases), device=device)
  k, d = lift.shape[1], lift.shape[0]
  slope_data, slope = c.data.negative_slope, c.model.negative_slope
  laplace = torch.distributions.Laplace(
      torch.tensor(0.0, device=device),
      torch.tensor(1.0 / np.sqrt(2.0), device=device))

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
    net = model().to(device)
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
    run(seed, steps)  # .item() at the end waits for the device
  return time.perf_counter() - t


def image_config(model: str, num_seeds: int, steps: int, batch: int,
                 dataset: str, conv_size: str = "small"):
  """The trainer config of an image model ("conv" or "mae") on 64x64 data."""
  c = train.default_config()
  c.data = images.default_config()
  c.data.dataset = dataset
  c.data.eval_size = 16
  if model == "conv":
    c.model = conv_ae.default_config(conv_size, latent_dim=12)
    c.objective.name = "autoencoder"
    c.objective.reconstruction = "sigmoid_ce"
    c.optimizer.clip_norm = 1.0
  else:
    c.model = vit.default_config("tiny")
    c.model.patch_size = 8
    c.objective.name = "masked_autoencoder"
    c.objective.mask_ratio = 0.75
  c.num_seeds, c.num_steps, c.log_every = num_seeds, steps, steps
  c.checkpoint_every, c.batch_size = steps, batch
  c.progress, c.num_devices = False, 1
  return c


def time_images(config, one_by_one: bool) -> float:
  """Seconds for config.num_steps steps of all seeds (compile excluded).

  one_by_one: run the seeds one after another with the same jitted
  single-seed program (key = seed), instead of vmapped in one program.
  """
  n_seeds = config.num_seeds
  if one_by_one:
    config = config.copy_and_resolve_references()
    config.num_seeds = 1
  trainer = train.Trainer(config)
  state = trainer.init_jit(jax.random.key(0))
  state, _ = trainer.chunk_jit(state, jax.random.key(0))  # compile + warm-up
  jax.block_until_ready(state)
  t = time.perf_counter()
  for seed in range(n_seeds if one_by_one else 1):
    key = jax.random.key(seed)
    state = trainer.init_jit(key)
    state, m = trainer.chunk_jit(state, key)
    jax.block_until_ready((state, m))
  return time.perf_counter() - t


def flops_per_image(config) -> float:
  """XLA's FLOP count of one training step of one seed, per image."""
  trainer = train.Trainer(config)
  hp = {k: jnp.asarray(v[0]) for k, v in trainer.runs.hparams.items()}
  model, loss_fn = trainer.model(hp), trainer.loss_fn(hp)
  batch = trainer.data.sample(jax.random.key(0), config.batch_size)
  variables = jax.eval_shape(model.init, jax.random.key(0), batch["x"][:2])

  def grads(v, b):
    return jax.grad(lambda p: loss_fn({**v, "params": p}, b,
                                      jax.random.key(1))[0])(v["params"])
  cost = jax.jit(grads).lower(variables, batch).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost["flops"]) / config.batch_size


def image_table(models_: list[str], seeds: list[int], steps: int, batch: int,
                dataset: str, conv_size: str, mfu: bool, peak: float):
  """Prints the markdown table of the image models."""
  names = {"conv": f"conv AE ({conv_size})", "mae": "ViT MAE (tiny, p=8)"}
  print(f"\nImage models on procedural {dataset} 64x64 (rendered in the "
        f"step), batch {batch}, {steps} steps, compile excluded\n")
  head = ("| model | R | (a) vmapped img/s total | (a) per seed | "
          "(b) one-by-one img/s total | a/b |")
  sep = "|---|---|---|---|---|---|"
  if mfu:
    head += " GFLOP/img | MFU (a) |"
    sep += "---|---|"
  print(head)
  print(sep, flush=True)
  for name in models_:
    flops = None
    for r in seeds:
      config = image_config(name, r, steps, batch, dataset, conv_size)
      if mfu and flops is None:
        flops = flops_per_image(config)
      ta = time_images(config, one_by_one=False)
      tb = time_images(config, one_by_one=True)
      rate_a, rate_b = r * steps * batch / ta, r * steps * batch / tb
      line = (f"| {names[name]} | {r} | {rate_a:,.0f} | {rate_a / r:,.0f} | "
              f"{rate_b:,.0f} | {tb / ta:.1f}x |")
      if mfu:
        line += (f" {flops / 1e9:.3f} | "
                 f"{100 * rate_a * flops / (peak * 1e12):.1f}% |")
      print(line, flush=True)


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
  parser.add_argument("--models", default="mlp",
                      help="comma-separated: mlp (synthetic AE vs PyTorch), "
                      "conv (conv autoencoder), mae (ViT MAE)")
  parser.add_argument("--image_steps", type=int, default=None)
  parser.add_argument("--image_batch", type=int, default=32)
  parser.add_argument("--image_dataset", default="shapes3d",
                      choices=images.PROCEDURAL)
  parser.add_argument("--conv_size", default="small",
                      choices=sorted(conv_ae.SIZES))
  parser.add_argument("--mfu", action="store_true")
  parser.add_argument("--peak_tflops", type=float, default=495.0)
  args = parser.parse_args()
  chosen = [m for m in args.models.split(",") if m]
  unknown = set(chosen) - {"mlp", "conv", "mae"}
  if unknown:
    parser.error(f"unknown --models {sorted(unknown)}; use mlp, conv, mae")
  print(f"Machine: {machine()}")
  image_models = [m for m in chosen if m != "mlp"]
  if image_models:
    image_seeds = args.seeds or ([1, 4] if args.quick else [1, 4, 16])
    image_steps = args.image_steps or (3 if args.quick else 10)
    image_table(image_models, image_seeds, image_steps, args.image_batch,
                args.image_dataset, args.conv_size, args.mfu,
                args.peak_tflops)
  if "mlp" not in chosen:
    return
  seeds = args.seeds or ([1, 8] if args.quick else [1, 8, 32])
  steps = args.steps or (200 if args.quick else 2000)
  print(f"\nSynthetic AE (16-64-64-4-64-64-16, batch 256), {steps} steps\n")
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
