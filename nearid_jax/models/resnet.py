"""Supervised image classifiers: a small CNN and a ResNet-18-style network.

Normalisation is GroupNorm (stateless) or BatchNorm. BatchNorm's running
statistics live in the "batch_stats" collection, which the trainer carries
per run in `TrainState.model_state`: every seed has its own statistics,
updated from its own batches (train=True in the loss) and used, frozen, at
evaluation (train=False).

Layer names, CNN with B conv blocks: "conv_0" … "conv_{B-1}" [n, h, w, c],
"latent" [n, latent_dim] (penultimate, after ReLU), "logits" [n, classes].
ResNet with S stages: "stem" [n, h, w, c0], "stage_0" … "stage_{S-1}"
[n, h_s, w_s, c0 · 2^s] (sides halve from stage 1 on), "latent" [n, c0 ·
2^(S-1)] (global average pool, the penultimate layer), "logits".
"""
from __future__ import annotations

from typing import Any, ClassVar, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from nearid_jax.models import conv

NORMS = ("batch", "group")

# ResNet-18: 4 stages of 2 basic blocks, 64 -> 512 channels.
RESNET_SIZES = {
    "resnet18": dict(stage_sizes=(2, 2, 2, 2), width=64),
    "tiny": dict(stage_sizes=(1, 1), width=8),
}


def cnn_config(norm: str = "group") -> ml_collections.ConfigDict:
  """The `model` part of a config for the small CNN classifier.

  Examples:
    >>> cnn_config().name
    'cnn_classifier'
  """
  return ml_collections.ConfigDict(dict(
      name="cnn_classifier", widths=(32, 64, 128), strides=(2, 2, 2),
      latent_dim=128, norm=norm, negative_slope=0.0))


def resnet_config(size: str = "resnet18", norm: str = "batch",
                  stem: str = "cifar") -> ml_collections.ConfigDict:
  """The `model` part of a config for the ResNet classifier.

  Args:
    size: "resnet18" or "tiny" (tests).
    norm: "batch" (running statistics per seed) or "group".
    stem: "cifar" (3x3 stride 1, for 32-64 px images) or "imagenet" (7x7
      stride 2 and a 3x3 max-pool).

  Raises:
    ValueError: for an unknown size.
  """
  if size not in RESNET_SIZES:
    raise ValueError(f"unknown ResNet size {size!r}; choose one of "
                     f"{sorted(RESNET_SIZES)}.")
  return ml_collections.ConfigDict(dict(
      name="resnet_classifier", size=size, norm=norm, stem=stem,
      negative_slope=0.0, **RESNET_SIZES[size]))


def _norm(kind: str, train: bool, name: str):
  if kind == "batch":
    return nn.BatchNorm(use_running_average=not train, momentum=0.9,
                        epsilon=1e-5, name=name)
  if kind == "group":
    return _GroupNorm(name=name)
  raise ValueError(f"config.model.norm: unknown norm {kind!r}; choose one of "
                   f"{NORMS}.")


def _dense_head(params, z: jax.Array) -> jax.Array:
  # `decode` is not the compact method, so it applies the head's
  # parameters directly instead of re-declaring the layer.
  return z @ params["kernel"] + params["bias"]


class _GroupNorm(nn.Module):
  """GroupNorm with min(32, C) groups (C must be divisible)."""

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    groups = 32 if c % 32 == 0 else next(g for g in (16, 8, 4, 2, 1)
                                         if c % g == 0)
    return nn.GroupNorm(num_groups=groups, name="gn")(x)


class CNNClassifier(nn.Module):
  """Conv blocks (3x3, norm, activation) -> global pool -> dense -> logits.

  Attributes:
    num_classes: number of logits.
    widths, strides: per conv block.
    latent_dim: width of the penultimate dense layer ("latent").
    norm: "group" or "batch".
    negative_slope: LeakyReLU slope (0 = ReLU; may be traced).
  """
  num_classes: int
  widths: Sequence[int] = (32, 64, 128)
  strides: Sequence[int] = (2, 2, 2)
  latent_dim: int = 128
  norm: str = "group"
  negative_slope: Any = 0.0

  takes_train: ClassVar[bool] = True

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array | None = None,
               train: bool = False):
    """x: [n, H, W, C] -> (logits [n, classes], {layer: activations})."""
    del mask
    reps = {}
    h = x
    for i, (c, s) in enumerate(zip(self.widths, self.strides)):
      h = conv.Conv(c, (3, 3), (s, s), name=f"conv_{i}")(h)
      h = _norm(self.norm, train, f"norm_{i}")(h)
      h = reps[f"conv_{i}"] = jax.nn.leaky_relu(h, self.negative_slope)
    h = h.mean(axis=(1, 2))
    h = reps["latent"] = jax.nn.leaky_relu(
        nn.Dense(self.latent_dim, name="latent")(h), self.negative_slope)
    out = reps["logits"] = nn.Dense(self.num_classes, name="logits")(h)
    return out, reps

  def decode(self, z: jax.Array) -> jax.Array:
    """The head alone: penultimate representation -> logits."""
    return _dense_head(self.variables["params"]["logits"], z)

  def layer_names(self) -> tuple[str, ...]:
    return (tuple(f"conv_{i}" for i in range(len(self.widths)))
            + ("latent", "logits"))


class BasicBlock(nn.Module):
  """Two 3x3 convs with a residual; a 1x1 projection when shapes change."""
  features: int
  stride: int
  norm: str
  negative_slope: Any = 0.0

  @nn.compact
  def __call__(self, x, train: bool):
    act = lambda v: jax.nn.leaky_relu(v, self.negative_slope)
    y = conv.Conv(self.features, (3, 3), (self.stride,) * 2,
                  name="conv1")(x)
    y = act(_norm(self.norm, train, "norm1")(y))
    y = conv.Conv(self.features, (3, 3), name="conv2")(y)
    y = _norm(self.norm, train, "norm2")(y)
    if x.shape[-1] != self.features or self.stride != 1:
      x = conv.Conv(self.features, (1, 1), (self.stride,) * 2,
                    name="proj")(x)
      x = _norm(self.norm, train, "proj_norm")(x)
    return act(x + y)


class ResNetClassifier(nn.Module):
  """ResNet with basic blocks (ResNet-18 for stage_sizes (2, 2, 2, 2)).

  Attributes:
    num_classes: number of logits.
    stage_sizes: blocks per stage; stage s has width · 2^s channels and
      (from s = 1 on) halves the side.
    width: channels of the stem and the first stage.
    norm: "batch" or "group".
    stem: "cifar" or "imagenet".
    negative_slope: LeakyReLU slope (0 = ReLU, the standard ResNet; may be
      traced, e.g. a grid over the bi-Lipschitz knob of the paper).
  """
  num_classes: int
  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  width: int = 64
  norm: str = "batch"
  stem: str = "cifar"
  negative_slope: Any = 0.0

  takes_train: ClassVar[bool] = True

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array | None = None,
               train: bool = False):
    """x: [n, H, W, C] -> (logits [n, classes], {layer: activations}).

    Examples:
      >>> model = ResNetClassifier(3, (1, 1), width=4)
      >>> x = jnp.zeros((2, 16, 16, 1))
      >>> (out, reps), v = jax.eval_shape(model.init_with_output,
      ...                                 jax.random.key(0), x)
      >>> out.shape, reps["stage_1"].shape, sorted(v)
      ((2, 3), (2, 8, 8, 8), ['batch_stats', 'params'])
    """
    del mask
    act = lambda v: jax.nn.leaky_relu(v, self.negative_slope)
    reps = {}
    if self.stem == "imagenet":
      h = conv.Conv(self.width, (7, 7), (2, 2), name="stem_conv")(x)
      h = act(_norm(self.norm, train, "stem_norm")(h))
      h = nn.max_pool(h, (3, 3), (2, 2), padding="SAME")
    else:
      h = conv.Conv(self.width, (3, 3), name="stem_conv")(x)
      h = act(_norm(self.norm, train, "stem_norm")(h))
    reps["stem"] = h
    for s, n_blocks in enumerate(self.stage_sizes):
      for b in range(n_blocks):
        stride = 2 if s > 0 and b == 0 else 1
        h = BasicBlock(self.width * 2 ** s, stride, self.norm,
                       self.negative_slope,
                       name=f"stage_{s}_block_{b}")(h, train)
      reps[f"stage_{s}"] = h
    h = reps["latent"] = h.mean(axis=(1, 2))
    out = reps["logits"] = nn.Dense(self.num_classes, name="logits")(h)
    return out, reps

  def decode(self, z: jax.Array) -> jax.Array:
    """The head alone: penultimate representation -> logits."""
    return _dense_head(self.variables["params"]["logits"], z)

  def layer_names(self) -> tuple[str, ...]:
    return (("stem",) + tuple(f"stage_{s}"
                              for s in range(len(self.stage_sizes)))
            + ("latent", "logits"))
