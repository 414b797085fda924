"""The paper's experiments, one module each (run through `nearid_jax.reproduce`).

Each experiment module has `run(config, workdir) -> dict`: it trains what
it needs (`nearid_jax.train.run`, resuming), runs the analysis with the
library (align, ica, metrics) and writes `workdir/results.json` (one
record per table row, column and seed aggregate: mean and 95% interval),
`workdir/results.md` (the paper's layout) and plots. The binary is
`python -m experiments.reproduce --config=experiments/configs/paper/<name>.py`.

  e0_bilipschitz   the warm-up: rigid ε vs the decoder's bi-Lipschitz bound
  table1           statistical ε between runs (perm / rigid / linear / ICA)
  table2           disentanglement (InfoMEC, DCI, MIG) of AE, AE + ICA and
                   the baselines, with label-free weight-decay selection
  aggregate        intervals, Spearman, result files (shared)
  runs             training, representations, bi-Lipschitz, speed (shared)
"""
