"""The all-pairs engine: ε statistics of many (target, source) pairs.

`pairs` evaluates a list of pairs in one program, in three phases: every
target x source cross-covariance from one product; every matching (the
assignment solver's loops run once per device group, not per chunk); then
per chunk of pairs the maps (`maps.fit_maps`) and the evaluation-row
residuals, in cache-sized row blocks on CPU. Where the work goes (device
groups, chunk budgets) is asked of `devices`.
"""
from __future__ import annotations

import functools
import math

import jax
from jax import lax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from nearid_jax import parallel
from nearid_jax.align import devices
from nearid_jax.align import maps as maps_lib
from nearid_jax.align.options import Options
from nearid_jax.align.stats import Runs, mm

_HIGHEST = lax.Precision.HIGHEST


def upper_quantile(v, q: float):
  """q-quantile along the last axis of non-negative values, numpy's "linear"
  method, exactly.

  The two order statistics around rank q (n - 1) are found by bisection on
  the float bit patterns (monotone for v >= 0): one count over the row per
  bit, no sort. On CPU this is ~10x cheaper per pair than `lax.top_k` of the
  top 1% (which dominated the pairs program), and it vectorises the same
  way on every backend.
  """
  v = jnp.abs(v)  # -0.0 -> +0.0, so the bit patterns are all >= 0
  n = v.shape[-1]
  h = q * (n - 1)
  lo = int(math.floor(h))
  frac = h - lo
  itype = jnp.int64 if v.dtype == jnp.float64 else jnp.int32
  bits = lax.bitcast_convert_type(v, itype)

  def body(_, carry):
    # count(bits <= low) < lo + 1 <= count(bits <= high)
    low, high = carry
    mid = low + (high - low) // 2
    ok = jnp.sum(bits <= mid[..., None], axis=-1) >= lo + 1
    return jnp.where(ok, low, mid), jnp.where(ok, mid, high)
  init = (jnp.full(v.shape[:-1], -1, itype), jnp.max(bits, axis=-1))
  _, high = lax.fori_loop(0, 8 * v.dtype.itemsize, body, init)
  v_lo = lax.bitcast_convert_type(high, v.dtype)
  if frac == 0 or lo + 1 > n - 1:
    return v_lo
  count = jnp.sum(v <= v_lo[..., None], axis=-1)
  above = jnp.min(jnp.where(v > v_lo[..., None], v, jnp.inf), axis=-1)
  v_hi = jnp.where(count >= lo + 2, v_lo, above)
  return v_lo + frac * (v_hi - v_lo)


def pair_errors(xe_t, xe_s, t, s, mats, offs, diameter, sst_t, rows: int,
                 gathers=None):
  """ε statistics of one pair: ({mean,max,q99}: [K], r2: [K, d_t]).

  The evaluation rows of target run t and source run s are read straight
  from the stacks xe_t [R_t, n_eval, d_t] and xe_s [R_s, n_eval, d_s], in
  blocks of `rows` rows: each block's prediction and residuals ([rows, K,
  d_out]) stay in cache between the product that makes them and the
  reductions that read them. One pair's whole [n_eval, K, d_out] residual
  (25 MB at n_eval = 25000, d = 64) made the pass memory-bound on CPU; on
  accelerators `rows` is n_eval (one block). The last block is shifted back
  to end at n_eval (no padding copy); rows it shares with the block before
  are written twice with the same norms and left out of the sums.

  `gathers` maps a kind's position to (index [d_out], value [d_out]) when
  its matrix is a (scaled) signed permutation: its prediction
  xe_s[:, index] * value is then a gather, not a matmul.
  """
  _, n_eval, dt = xe_t.shape
  n_kinds, d_out, ds = mats.shape
  gathers = gathers or {}
  dense = [k for k in range(n_kinds) if k not in gathers]
  # One [rows, d_s] x [d_s, K d_out] product for the dense kinds: a wide
  # matmul runs far closer to the machine's peak than K narrow ones.
  w = (mats[jnp.asarray(dense)].reshape(len(dense) * d_out, ds).T
       if dense else None)
  n_blocks = -(-n_eval // rows)

  # One index type for every slice start (int64 loop counters under x64).
  t, s = jnp.asarray(t, jnp.int32), jnp.asarray(s, jnp.int32)
  zero = jnp.zeros((), jnp.int32)

  def block(i, carry):
    norms, ss = carry
    i = jnp.asarray(i, jnp.int32)
    start = jnp.minimum(i * rows, n_eval - rows)
    xt = lax.dynamic_slice(xe_t, (t, start, zero), (1, rows, dt))[0]
    xs = lax.dynamic_slice(xe_s, (s, start, zero), (1, rows, ds))[0]
    preds = {}
    if dense:
      out = mm(xs, w).reshape(rows, len(dense), d_out)
      preds = {k: out[:, j] for j, k in enumerate(dense)}
    for k, (idx, val) in gathers.items():
      preds[k] = xs[:, idx] * val
    pred = jnp.stack([preds[k] for k in range(n_kinds)], axis=1)
    target = jnp.pad(xt, ((0, 0), (0, d_out - dt)))
    sq = (target[:, None] - pred - offs) ** 2  # [rows, K, d_out]
    norms = lax.dynamic_update_slice_in_dim(
        norms, jnp.sqrt(jnp.sum(sq, axis=-1)).T, start, axis=1)
    fresh = start + jnp.arange(rows) >= i * rows  # not in the block before
    ss += jnp.sum(jnp.where(fresh[:, None, None], sq[..., :dt], 0), axis=0)
    return norms, ss
  init = (jnp.zeros((n_kinds, n_eval), mats.dtype),
          jnp.zeros((n_kinds, dt), mats.dtype))
  norms, ss = lax.fori_loop(0, n_blocks, block, init)
  r2 = 1 - ss / jnp.where(sst_t > 0, sst_t, jnp.nan)
  return {"mean": jnp.mean(norms, axis=-1) / diameter,
          "max": jnp.max(norms, axis=-1) / diameter,
          "q99": upper_quantile(norms, 0.99) / diameter,
          "r2": r2}



def cross_covariances(xt, xs):
  """sum_n xt[t, n, :]^T xs[s, n, :] for every t, s: [R_t, R_s, d_t, d_s].

  Summed over blocks of rows: the product wants each side as one
  [rows, R d] matrix, a transposed copy of its input, which for the whole
  input would double the fit rows in memory (6 GiB at R = 64, n = 10⁵,
  d = 256); per block the copies stay within the chunk budget.
  """
  _, n, dt = xt.shape
  rs, _, ds = xs.shape
  block = max(1, min(n, devices._budget()  # pylint: disable=protected-access
                     // (4 * (xt.shape[0] * dt + rs * ds))))
  full = n // block

  def product(a, b):
    return jnp.einsum("tnd,sne->tsde", a, b, precision=_HIGHEST)

  def body(i, acc):
    start = jnp.asarray(i, jnp.int32) * block
    rows = lambda x: lax.dynamic_slice_in_dim(x, start, block, axis=1)  # noqa: E731
    return acc + product(rows(xt), rows(xs))
  acc = jnp.zeros((xt.shape[0], rs, dt, ds), xt.dtype)
  acc = lax.fori_loop(0, full, body, acc)
  if full * block < n:  # the remaining rows, a static slice
    acc += product(xt[:, full * block:], xs[:, full * block:])
  return acc


def pairs(*args, opts: Options, chunk: int, rows: int):
  """`pairs_program` with its concrete inputs on the devices it uses.

  Args: as `pairs_program` (positional).
  """
  moved = devices._to_pair_devices(args)  # pylint: disable=protected-access
  return pairs_program(*moved, opts=opts, chunk=chunk, rows=rows)


@functools.partial(parallel.jit,
                   static_argnames=("opts", "chunk", "rows"))
def pairs_program(tgt: Runs, src: Runs | None, ica_t, ica_s, pair_t,
                  pair_s, valid_t, valid_s, rel=None, *, opts: Options,
                  chunk: int, rows: int):
  """ε of the pairs (tgt[pair_t[p]], src[pair_s[p]]) in one program.

  Args:
    tgt, src: per-run statistics of the target and source runs; src None:
      the sources are the targets (pairs among one set of runs).
    ica_t, ica_s: their `ICAMaps` (None without "ica"; ica_s is ignored
      when src is None).
    pair_t, pair_s: [P] int32 run indices of each pair.
    valid_t, valid_s: [R_t], [R_s] bool; pairs with an invalid run are NaN.
    rel: [] source / target scale factor (`maps`); None: 1.
    opts: static settings.
    chunk: pairs evaluated together (vmapped) within a device.
    rows: evaluation rows per block (see `pair_errors`).
  """
  same = src is None
  if same:
    src, ica_s = tgt, ica_t
  rel = jnp.ones((), tgt.xf.dtype) if rel is None else rel
  # Phase 1: every target x source cross-covariance in one product (all
  # pairs' [d_t, d_s] blocks, the diagonal too): one large matmul instead of
  # a [n_fit, d] gather of both runs per pair (3x faster on CPU for R=16).
  cross = cross_covariances(tgt.xf, src.xf) / opts.n_fit
  n_pairs = pair_t.shape[0]
  layout = devices._pair_layout(n_pairs)  # pylint: disable=protected-access
  groups, per_group = layout.num_devices, layout.per_device
  if groups > 1:
    # Split the product over the devices that evaluate the pairs, along its
    # longer run axis (uneven splits are padded by the compiler). Left
    # unconstrained, every device computed the whole product (its inputs
    # are replicated for the pairs), which cost 2x its time on 2 cores.
    spec = (P(parallel.RUNS) if cross.shape[0] >= cross.shape[1]
            else P(None, parallel.RUNS))
    cross = lax.with_sharding_constraint(
        cross, jax.sharding.NamedSharding(layout.mesh, spec))
  # The layer's padding rule: copies of the last pair, dropped below.
  pt, ps = layout.pad((pair_t, pair_s))
  cs = cross[pt, ps].reshape(groups, per_group, *cross.shape[2:])
  has_ica = ica_t is not None
  # The devices need the evaluation rows and the small per-run statistics,
  # not the fit rows (only phase 1 reads them): each device gets its own
  # copy of what it is passed, so pass no more, and one copy of the runs
  # when targets and sources are the same runs.
  strip = lambda r: r.replace(xf=r.xf[:, :0])  # noqa: E731
  shared = [strip(tgt), ica_t if has_ica else jnp.zeros((1,))]
  if not same:
    shared += [strip(src), ica_s if has_ica else jnp.zeros((1,))]
  take = devices._take  # pylint: disable=protected-access

  def group(c_g, t_g, s_g, valid_t, valid_s, rel, *shared):
    tgt, ica_t = shared[:2]
    src, ica_s = (tgt, ica_t) if same else shared[2:]
    if not has_ica:
      ica_t = ica_s = None

    def stats_of(t, s):
      return (take(tgt, t), take(src, s),
              None if ica_t is None else take(ica_t, t),
              None if ica_s is None else take(ica_s, s))

    # Phase 2: every matching of the group at once, so the assignment
    # solver's sequential loops run once for the group, not once per chunk.
    def match(c, t, s):
      return maps_lib.match(c, *stats_of(t, s), opts)
    matches = jax.vmap(match)(c_g, t_g, s_g)

    # Phase 3: maps and residuals, chunked over pairs.
    def evaluate(args):
      c, m, t, s = args
      st, ss, it, is_ = stats_of(t, s)
      mats, offs = maps_lib.fit_maps(c, st, ss, it, is_, m, opts, rel)
      gathers = {}
      if "perm" in opts.kinds and c.shape[0] == c.shape[1]:
        j = opts.kinds.index("perm")
        idx = jnp.clip(m["perm"].perm, 0, c.shape[1] - 1)
        gathers[j] = (idx, mats[j][jnp.arange(c.shape[0]), idx])
      out = pair_errors(tgt.xe, src.xe, t, s, mats, offs, st.diameter,
                        st.sst, rows, gathers)
      ok = valid_t[t] & valid_s[s]
      return jax.tree.map(lambda v: jnp.where(ok, v, jnp.nan), out)
    return lax.map(evaluate, (c_g, matches, t_g, s_g), batch_size=chunk)

  # Phases 2-3 of each group of pairs on its own device.
  out = parallel.map_runs(
      group, cs, pt.reshape(groups, per_group), ps.reshape(groups, per_group),
      valid_t, valid_s, rel, *shared,
      in_axes=(0, 0, 0) + (None,) * (3 + len(shared)))
  return jax.tree.map(
      lambda v: v.reshape(groups * per_group, *v.shape[2:])[:n_pairs], out)


@functools.partial(parallel.jit, static_argnames=("opts",))
def maps_one(tgt: Runs, src: Runs, ica_t, ica_s, rel, *, opts: Options):
  """Maps of one pair fitted on all of its (fit) rows."""
  c = mm(tgt.xf[0].T, src.xf[0]) / opts.n_fit
  take = devices._take  # pylint: disable=protected-access
  args = (take(tgt, 0), take(src, 0),
          None if ica_t is None else take(ica_t, 0),
          None if ica_s is None else take(ica_s, 0))
  matches = maps_lib.match(c, *args, opts)
  return maps_lib.fit_maps(c, *args, matches, opts, rel)


def chunks(n_pairs, n_eval, d_t, d_s, n_kinds, pair_chunk):
  """(pairs per chunk, evaluation rows per block) for `pairs`.

  One block's intermediates (two row blocks, the prediction, the residual
  and its square) are kept within the budget: on CPU a few MiB of rows
  (~1k), so that they stay in cache; on accelerators all rows, and as many
  pairs per chunk as fit.
  """
  budget = devices._budget()  # pylint: disable=protected-access
  d_out = max(d_t, d_s)
  per_row = 4 * (d_t + d_s + 3 * n_kinds * d_out)
  rows = max(1, min(n_eval, budget // per_row))
  if pair_chunk is not None:
    if int(pair_chunk) < 1:
      raise ValueError(f"pair_chunk must be >= 1, got {pair_chunk}.")
    return min(int(pair_chunk), n_pairs), rows
  per_pair = rows * per_row + 4 * n_kinds * n_eval  # + the norms
  return max(1, min(n_pairs, budget // per_pair)), rows
