"""2-D convolutions whose gradients stay fast inside XLA:CPU loops.

The trainer runs its steps in a `lax.scan`. Inside such a loop XLA:CPU
computes the gradients JAX derives for a convolution (convolutions with
transposed dimension numbers, dilated inputs) 25-125x slower than outside
it (measured on a 2-core x86 CPU: a 3x3 kernel gradient, 0.29 s vs
2.3 ms), while convolutions in the canonical NHWC x HWIO form stay fast.
`conv2d` therefore has a custom VJP that writes both gradients as canonical
stride-1 convolutions (on an explicitly zero-dilated output gradient when
the stride is larger than 1). The numbers are the same as autodiff's; on
other backends plain `lax.conv_general_dilated` and its autodiff are used.

The same holds for the grouped convolutions that `jax.vmap` makes of a
convolution whose weights carry the run axis (the multi-seed trainer): on
CPU they are 3-6x slower than the runs one after another. On CPU the
canonical convolutions therefore have a batching rule of their own: a batch
of inputs folds into the rows, a batch of weights into the output channels,
and a batch of both goes through `lax.map`, one canonical convolution per
run.
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
from typing import Iterator, Sequence

import flax.linen as nn

import jax
from jax import custom_batching
import jax.numpy as jnp

from nearid_jax.models import initializers

_DN = ("NHWC", "HWIO", "NHWC")
_FORWARD_MODE = contextvars.ContextVar("nearid_conv_forward_mode",
                                       default=False)
Padding = tuple[tuple[int, int], tuple[int, int]]


def _lax_conv(x, w, stride, padding):
  return jax.lax.conv_general_dilated(x, w, stride, padding,
                                      dimension_numbers=_DN)


@functools.lru_cache(maxsize=None)
def _batched_conv(stride, padding):
  """The canonical conv with the CPU batching rule (see the module doc)."""
  @custom_batching.custom_vmap
  def conv(x, w):
    return _lax_conv(x, w, stride, padding)

  @conv.def_vmap
  def rule(axis_size, in_batched, x, w):
    x_batched, w_batched = in_batched
    if x_batched and not w_batched:
      y = conv(x.reshape((-1,) + x.shape[2:]), w)
      return y.reshape((axis_size, x.shape[1]) + y.shape[1:]), True
    if w_batched and not x_batched:
      r, kh, kw, c_in, c_out = w.shape
      y = conv(x, jnp.transpose(w, (1, 2, 3, 0, 4)).reshape(
          kh, kw, c_in, r * c_out))
      return jnp.moveaxis(y.reshape(y.shape[:3] + (r, c_out)), 3, 0), True
    return jax.lax.map(lambda xw: conv(*xw), (x, w)), True

  return conv


def _conv(x, w, stride, padding):
  return _batched_conv(stride, padding)(x, w)


def _dilate(dy: jax.Array, stride: tuple[int, int]) -> jax.Array:
  """Inserts stride - 1 zeros between the rows and columns of dy."""
  if stride == (1, 1):
    return dy
  n, h, w, c = dy.shape
  out = jnp.zeros((n, (h - 1) * stride[0] + 1, (w - 1) * stride[1] + 1, c),
                  dy.dtype)
  return out.at[:, ::stride[0], ::stride[1]].set(dy)


def _conv_cpu_fwd(x, w, stride, padding):
  return _conv(x, w, stride, padding), (x, w)


def _conv_cpu_bwd(stride, padding, res, dy):
  # stride and padding are static (nondiff_argnums), so they come first.
  x, w = res
  kh, kw = w.shape[:2]
  (plo_h, _), (plo_w, _) = padding
  dyd = _dilate(dy, stride)
  # dx[i] = sum_t dyd[i + p - t] w[t]: a correlation of dyd with the
  # flipped kernel; the high padding makes the output exactly x's size.
  pads = []
  for size, k, plo, dlen in ((x.shape[1], kh, plo_h, dyd.shape[1]),
                             (x.shape[2], kw, plo_w, dyd.shape[2])):
    lo = k - 1 - plo
    pads.append((lo, size - dlen - lo + k - 1))
  w_t = jnp.swapaxes(w[::-1, ::-1], 2, 3)
  dx = _conv(dyd, w_t, (1, 1), tuple(pads))
  # dw[t] = sum_{n, j} x_pad[n, t + j] dyd[n, j]: batch and channels
  # swap roles, which keeps the convolution canonical.
  x_pad = jnp.pad(x, ((0, 0), padding[0], padding[1], (0, 0)))
  lhs = jnp.transpose(x_pad, (3, 1, 2, 0))      # [c_in, H, W, n]
  rhs = jnp.transpose(dyd, (1, 2, 0, 3))        # [h, w, n, c_out]
  dw = _conv(lhs, rhs, (1, 1), ((0, 0), (0, 0)))[:, :kh, :kw]
  return dx, jnp.transpose(dw, (1, 2, 0, 3))


_conv_cpu = jax.custom_vjp(_conv, nondiff_argnums=(2, 3))
_conv_cpu.defvjp(_conv_cpu_fwd, _conv_cpu_bwd)


def conv2d(x: jax.Array, w: jax.Array, stride: Sequence[int] = (1, 1),
           padding: Padding = ((0, 0), (0, 0))) -> jax.Array:
  """NHWC x HWIO convolution (cross-correlation) with explicit padding.

  Args:
    x: [n, H, W, c_in].
    w: [kh, kw, c_in, c_out].
    stride: (sh, sw).
    padding: ((low, high), (low, high)) zero padding of H and W.

  Returns:
    [n, H', W', c_out] with H' = (H + low + high - kh) // sh + 1.

  Examples:
    >>> x = jnp.ones((1, 4, 4, 2)); w = jnp.ones((3, 3, 2, 5))
    >>> conv2d(x, w, (1, 1), ((1, 1), (1, 1))).shape
    (1, 4, 4, 5)
  """
  stride = tuple(int(s) for s in stride)
  padding = tuple((int(lo), int(hi)) for lo, hi in padding)
  if jax.default_backend() == "cpu" and not _FORWARD_MODE.get():
    return _conv_cpu(x, w, stride, padding)
  return _lax_conv(x, w, stride, padding)


@contextlib.contextmanager
def forward_mode() -> Iterator[None]:
  """Within it, `conv2d` traces as lax's own convolution on every backend.

  The CPU custom VJP supports reverse mode only; functions traced inside
  this context also support forward mode (`jax.jvp`, `jax.jacfwd`), e.g. a
  decoder's Jacobian with respect to a few latents. The numbers are the
  same; only the CPU speed of gradients in training loops differs.

  Examples:
    >>> x = jnp.ones((1, 4, 4, 1)); w = jnp.ones((3, 3, 1, 1))
    >>> with forward_mode():
    ...   j = jax.jacfwd(lambda x: conv2d(x, w, (1, 1), ((1, 1), (1, 1))))(x)
    >>> j.shape
    (1, 4, 4, 1, 1, 4, 4, 1)
  """
  token = _FORWARD_MODE.set(True)
  try:
    yield
  finally:
    _FORWARD_MODE.reset(token)


class Conv(nn.Module):
  """A bias-free conv layer over `conv2d` ("kernel" [kh, kw, c_in, c_out]).

  Attributes:
    features: output channels.
    kernel_size: (kh, kw).
    strides: (sh, sw).
    padding: ((low, high), (low, high)), or "SAME" (for stride 1 and odd
      kernels: (k // 2, k // 2)) or "VALID".
  """
  features: int
  kernel_size: Sequence[int]
  strides: Sequence[int] = (1, 1)
  padding: str | Padding = "SAME"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kh, kw = self.kernel_size
    kernel = self.param("kernel", initializers.lecun_normal_flat,
                        (kh, kw, x.shape[-1], self.features))
    padding = self.padding
    if padding == "VALID":
      padding = ((0, 0), (0, 0))
    elif padding == "SAME":
      padding = _same_padding(x.shape[1:3], (kh, kw), self.strides)
    return conv2d(x, kernel, self.strides, padding)


def _same_padding(size, kernel, stride) -> Padding:
  """XLA's "SAME": output side ceil(size / stride)."""
  pads = []
  for n, k, s in zip(size, kernel, stride):
    out = -(-n // s)
    total = max((out - 1) * s + k - n, 0)
    pads.append((total // 2, total - total // 2))
  return tuple(pads)
