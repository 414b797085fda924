r"""L-BFGS for the metrics' logistic fits: ours vs optax.lbfgs, same run.

The fits `nearid_jax.metrics.linear_models.fit_logistic` does inside the
metrics: multinomial logistic regression with sklearn's lbfgs objective
(l2 = 1 / n, as modularity/explicitness and BetaVAE use), n = 5000-10000
standardised latents, p = 10-20 features, C = 10-40 classes, batched over
runs under `jax.jit(jax.vmap(...))`. Two minimisers of the same objective:

* ours: `linear_models.lbfgs_minimize` (Armijo backtracking);
* optax: `optax.lbfgs` with `optax.scale_by_zoom_linesearch` (strong Wolfe),
  stopped by the same rule (max |gradient| <= tol or max_iter iterations).

Accuracy: each fit's objective minus the objective at scikit-learn's
`LogisticRegression(solver="lbfgs", C=1)` coefficients (negative: lower than
sklearn), and the largest difference of the fitted probabilities from
sklearn's `predict_proba`. Speed: median time of the compiled batch
(compile excluded), ratio optax / ours taken in the same process.

  python -m benchmarks.lbfgs --quick     # one size (< 1 min)
  python -m benchmarks.lbfgs             # the grid above
"""
from __future__ import annotations

import argparse
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn import linear_model

from nearid_jax.metrics import linear_models


def _loss_fn(x, y, p, c):
  n = x.shape[0]
  mask = jnp.ones((c,), bool)
  l2 = 1.0 / n

  def loss(flat):
    w = flat[:p * c].reshape(p, c)
    b = flat[p * c:]
    logp = jax.nn.log_softmax(linear_models.logistic_logits(x, w, b, mask),
                              axis=-1)
    ce = -jnp.take_along_axis(logp, y[:, None], axis=-1)[:, 0]
    return jnp.mean(ce) + 0.5 * l2 * jnp.sum(w * w)

  return loss


def optax_minimize(fun, x0, max_iter=100, tol=1e-4, memory=10):
  """`lbfgs_minimize`'s contract with optax.lbfgs + zoom line search."""
  opt = optax.lbfgs(memory_size=memory,
                    linesearch=optax.scale_by_zoom_linesearch(
                        max_linesearch_steps=20))
  value_and_grad = optax.value_and_grad_from_state(fun)

  def step(carry):
    params, state = carry
    value, grad = value_and_grad(params, state=state)
    updates, state = opt.update(grad, state, params, value=value, grad=grad,
                                value_fn=fun)
    return optax.apply_updates(params, updates), state

  def go_on(carry):
    _, state = carry
    count = optax.tree.get(state, "count")
    grad = optax.tree.get(state, "grad")
    return (count == 0) | ((count < max_iter) &
                           (jnp.max(jnp.abs(grad)) > tol))

  return jax.lax.while_loop(go_on, step, (x0, opt.init(x0)))[0]


@functools.partial(jax.jit, static_argnames=("c", "solver", "max_iter"))
def _fit_batch(xs, ys, c, solver, max_iter):
  p = xs.shape[-1]
  minimize = (linear_models.lbfgs_minimize if solver == "ours"
              else optax_minimize)

  def one(x, y):
    loss = _loss_fn(x, y, p, c)
    flat = minimize(loss, jnp.zeros((p * c + c,), x.dtype),
                    max_iter=max_iter, tol=1e-4)
    return flat, loss(flat)

  return jax.vmap(one)(xs, ys)


def _problems(key, runs, n, p, c):
  """Latents whose labels depend noisily on a few directions (not separable)."""
  kx, kw, kn = jax.random.split(key, 3)
  x = jax.random.normal(kx, (runs, n, p))
  w = jax.random.normal(kw, (runs, p, c))
  noise = jax.random.gumbel(kn, (runs, n, c))
  y = jnp.argmax(jnp.einsum("rnp,rpc->rnc", x, w) + 2.0 * noise, -1)
  # Every class present, as sklearn would otherwise drop columns.
  y = y.at[:, :c].set(jnp.arange(c))
  return np.asarray(x, np.float32), np.asarray(y, np.int32)


def _sklearn(x, y, max_iter):
  m = linear_model.LogisticRegression(C=1.0, solver="lbfgs", tol=1e-4,
                                      max_iter=max_iter)
  m.fit(x, y)
  return m


def _time(fn, repeats):
  jax.block_until_ready(fn())
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t)
  return float(np.median(times))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--quick", action="store_true")
  parser.add_argument("--runs", type=int, default=4)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--max-iter", type=int, default=100)
  args = parser.parse_args()
  sizes = ([(5000, 10, 10)] if args.quick else
           [(5000, 10, 10), (5000, 10, 40), (10000, 20, 10),
            (10000, 20, 40)])
  print(f"{'n':>6} {'p':>3} {'C':>3} | {'d_loss ours':>11} "
        f"{'d_loss optax':>12} | {'dprob ours':>10} {'dprob optax':>11} | "
        f"{'ours s':>7} {'optax s':>7} {'optax/ours':>10}")
  for i, (n, p, c) in enumerate(sizes):
    xs, ys = _problems(jax.random.key(i), args.runs, n, p, c)
    res = {}
    for solver in ("ours", "optax"):
      flat, loss = _fit_batch(xs, ys, c, solver, args.max_iter)
      secs = _time(lambda s=solver: _fit_batch(xs, ys, c, s, args.max_iter),
                   args.repeats)
      res[solver] = (np.asarray(flat), np.asarray(loss), secs)
    d_loss = {s: [] for s in res}
    d_prob = {s: [] for s in res}
    for r in range(args.runs):
      m = _sklearn(xs[r], ys[r], args.max_iter)
      ref = np.concatenate([m.coef_.T.ravel(), m.intercept_]).astype(
          np.float32)
      loss_fn = _loss_fn(jnp.asarray(xs[r]), jnp.asarray(ys[r]), p, c)
      ref_loss = float(loss_fn(jnp.asarray(ref)))
      ref_prob = m.predict_proba(xs[r])
      for s, (flat, loss, _) in res.items():
        d_loss[s].append(float(loss[r]) - ref_loss)
        w, b = flat[r, :p * c].reshape(p, c), flat[r, p * c:]
        prob = np.asarray(jax.nn.softmax(xs[r] @ w + b, -1))
        d_prob[s].append(float(np.max(np.abs(prob - ref_prob))))
    worst = lambda v: max(v, key=abs)
    print(f"{n:>6} {p:>3} {c:>3} | {worst(d_loss['ours']):>11.2e} "
          f"{worst(d_loss['optax']):>12.2e} | {max(d_prob['ours']):>10.2e} "
          f"{max(d_prob['optax']):>11.2e} | {res['ours'][2]:>7.3f} "
          f"{res['optax'][2]:>7.3f} {res['optax'][2] / res['ours'][2]:>10.2f}",
          flush=True)


if __name__ == "__main__":
  main()
