r"""Near-identifiability report on the synthetic autoencoder (`make demo`).

Command:
  python -m experiments.identifiability \
      --config=experiments/configs/identifiability.py --workdir=results/demo
  (`:smoke` for CI sizes; analyse an existing training workdir with
  --config.train_workdir=DIR; any field overridable, e.g.
  --config.train.num_seeds=16 --config.kinds="('perm','rigid','linear')")
Hardware and runtime: 2-core CPU, about 1 minute in all (training 8 seeds ×
3,000 steps ~30 s; the analysis ~30 s, mostly compiling); `:smoke` ~30 s.
Expected result (report.md): statistical ε between runs ordered
linear (~0.02) < rigid (~0.035) < signed perm (~0.09), and ICA (~0.02)
well below perm (ICA efficiency ~100%): the runs are near-identifiable up
to linear maps (and to signed permutations after ICA) at the 0.05
threshold; MCC to the true factors rises from ~0.75 raw to ~0.99 after ICA
(the paper's "AE + ICA = disentanglement", Theorem 3).
"""
from nearid_jax import report


def get_config(arg: str | None = None):
  config = report.default_config()
  config.train.objective.name = "autoencoder"
  config.train.progress = True
  if arg == "smoke":
    config.train.num_seeds = 3
    config.train.num_steps = 300
    config.train.log_every = 100
    config.train.checkpoint_every = 300
    config.train.data.eval_size = 512
    config.bi_lipschitz_points = 64
  elif arg:
    raise ValueError(f"unknown config argument {arg!r}; use ':smoke' or none")
  return config
