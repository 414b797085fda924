"""The runs a report analyses: reading, cleaning and grouping them.

`Runs` holds R runs' representations of the same n inputs with their seeds,
validity, names and grid points. `load_representations` reads the file
`nearid_jax.train.run` writes; `Runs.from_workdir` adds the names and grid
points of final.json; `Runs.clean` drops non-finite rows or runs with a
note; `Runs.groups` splits the runs by grid point (the report measures each
point on its own: pairs across grid points compare different models).
"""
from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from nearid_jax import workdir as workdir_lib

_REQUIRED = ("u", "seed", "valid")
_OPTIONAL = ("x", "label", "grid_index")
# A run with non-finite values in more than this share of its rows is left
# out; below it, those rows are dropped from every run (rows must match).
_MAX_BAD_ROW_SHARE = 0.01


def load_representations(path: str, layer: str) -> dict[str, np.ndarray]:
  """Reads representations.npz written by `train.run`, checking its keys.

  Args:
    path: the .npz file.
    layer: the layer to read ("z/<layer>").

  Returns:
    {"z": [R, n, d], "u": [n, k], "seed": [R], "valid": [R] bool, ...}.

  Raises:
    FileNotFoundError: no such file.
    ValueError: unexpected or missing keys (listing found and expected),
      or inconsistent shapes.
  """
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} not found: train first, or point "
                            "config.train_workdir at a training workdir.")
  data = workdir_lib.load_npz(path)  # names the path if it is truncated
  found = sorted(data)
  layers = sorted(k[2:] for k in found if k.startswith("z/"))
  expected = [f"z/{layer}", *_REQUIRED]
  allowed = set(expected) | set(_OPTIONAL)
  unexpected = [k for k in found if k not in allowed
                and not k.startswith("z/")]
  missing = [k for k in expected if k not in data]
  if unexpected or missing:
    raise ValueError(
        f"{path} is not a representations file of nearid_jax.train: "
        + (f"unexpected key(s) {unexpected}; " if unexpected else "")
        + (f"missing key(s) {missing}; " if missing else "")
        + f"found {found}, expected {expected} (plus optional "
        f"{list(_OPTIONAL)} and z/<layer> for other layers). Layers in the "
        f"file: {layers}.")
  z, u = data[f"z/{layer}"], data["u"]
  if z.ndim != 3 or u.ndim != 2 or z.shape[1] != u.shape[0]:
    raise ValueError(f"{path}: z/{layer} has shape {z.shape} and u {u.shape}"
                     "; expected [R, n, d] and [n, k] with the same n.")
  r = z.shape[0]
  for k in ("seed", "valid", "grid_index"):
    if k in data and data[k].shape != (r,):
      raise ValueError(f"{path}: {k} has shape {data[k].shape}, expected "
                       f"({r},) for {r} runs.")
  out = dict(data)
  out.update(z=z.astype(np.float32), u=u.astype(np.float32),
             valid=data["valid"].astype(bool))
  return out


@dataclasses.dataclass
class Runs:
  """R runs' representations of the same n inputs.

  Attributes:
    z: [R, n, d] float32.
    u: [n, k] float32 ground-truth factors.
    seed: [R] int.
    valid: [R] bool; False for diverged runs (and runs `clean` left out).
    names: R labels.
    grid: R dicts {varied field: value} ({} without a grid).
    notes: what `clean` did, in words.
  """
  z: np.ndarray
  u: np.ndarray
  seed: np.ndarray
  valid: np.ndarray
  names: list[str]
  grid: list[dict]
  notes: list[str] = dataclasses.field(default_factory=list)

  @classmethod
  def from_arrays(cls, z, u, *, seed=None, valid=None, grid=None,
                  names=None) -> "Runs":
    """Runs from arrays; defaults: seeds 0..R-1, all valid, no grid.

    Examples:
      >>> import numpy as np
      >>> runs = Runs.from_arrays(np.zeros((2, 5, 3)), np.zeros((5, 2)))
      >>> runs.names, runs.grid
      (['seed0', 'seed1'], [{}, {}])
    """
    z = np.asarray(z, np.float32)
    r = z.shape[0]
    seed = np.arange(r) if seed is None else np.asarray(seed)
    valid = np.ones(r, bool) if valid is None else np.asarray(valid, bool)
    grid = [{} for _ in range(r)] if grid is None else [dict(g) for g in grid]
    names = ([f"seed{int(s)}" for s in seed] if names is None
             else list(names))
    if not len(seed) == len(valid) == len(grid) == len(names) == r:
      raise ValueError(f"{r} runs but {len(seed)} seeds, {len(valid)} valid "
                       f"flags, {len(grid)} grid points, {len(names)} names.")
    return cls(z, np.asarray(u, np.float32), seed, valid, names, grid)

  @classmethod
  def from_workdir(cls, train_dir: str, layer: str) -> "Runs":
    """The runs of a training workdir (representations.npz, final.json)."""
    reps = load_representations(
        os.path.join(train_dir, "representations.npz"), layer)
    r = len(reps["seed"])
    names = [f"seed{int(s)}" for s in reps["seed"]]
    grid = None
    path = os.path.join(train_dir, "final.json")
    if os.path.exists(path):
      with open(path) as f:
        records = json.load(f).get("runs", [])
      if len(records) == r:
        names = [rec["name"] for rec in records]
        grid = [rec.get("grid", {}) for rec in records]
    if grid is None and "grid_index" in reps:
      gi = reps["grid_index"]
      grid = ([{"grid_index": int(g)} for g in gi] if len(set(gi)) > 1
              else None)
    return cls.from_arrays(reps["z"], reps["u"], seed=reps["seed"],
                           valid=reps["valid"], grid=grid, names=names)

  @property
  def num_runs(self) -> int:
    return int(self.z.shape[0])

  def clean(self) -> "Runs":
    """Drops non-finite values: a run with many such rows, else the rows.

    A valid run with NaN/Inf in more than 1% of its rows is left out; rows
    with NaN/Inf in any other valid run are then dropped from every run
    and from the factors. Each step adds a note (counts and first row).

    Returns:
      A new `Runs` (self when nothing is non-finite).

    Raises:
      ValueError: the factors u hold NaN/Inf, or no row is left.
    """
    bad_u = ~np.isfinite(self.u).all(axis=1)
    if bad_u.any():
      raise ValueError(f"the factors u have {int(bad_u.sum())} row(s) with "
                       f"NaN/Inf (first: row {int(np.argmax(bad_u))}).")
    bad = ~np.isfinite(self.z).all(axis=2)          # [R, n]
    bad[~self.valid] = False
    if not bad.any():
      return self
    n = self.z.shape[1]
    valid = self.valid.copy()
    notes = list(self.notes)
    for i in np.flatnonzero(bad.sum(axis=1) > _MAX_BAD_ROW_SHARE * n):
      valid[i] = False
      notes.append(
          f"run {self.names[i]}: {int(bad[i].sum())} of {n} rows hold NaN/Inf "
          f"(first: row {int(np.argmax(bad[i]))}); run left out.")
    rows = bad[valid].any(axis=0)
    keep = ~rows
    if rows.any():
      which = [self.names[i] for i in np.flatnonzero(valid & bad.any(axis=1))]
      notes.append(
          f"{int(rows.sum())} of {n} rows hold NaN/Inf in run(s) "
          f"{', '.join(which)} (first: row {int(np.argmax(rows))}); those rows "
          "are dropped from every run and from the factors.")
    if not keep.any():
      raise ValueError("no row is finite in every valid run.")
    return dataclasses.replace(self, z=self.z[:, keep], u=self.u[keep],
                               valid=valid, notes=notes)

  def groups(self) -> list[tuple[dict, np.ndarray]]:
    """(grid point, run indices) per grid point, in order of appearance.

    Examples:
      >>> import numpy as np
      >>> runs = Runs.from_arrays(np.zeros((3, 5, 2)), np.zeros((5, 1)),
      ...                         grid=[{"a": 1.0}, {"a": 2.0}, {"a": 1.0}])
      >>> [(g, idx.tolist()) for g, idx in runs.groups()]
      [({'a': 1.0}, [0, 2]), ({'a': 2.0}, [1])]
    """
    order: list[str] = []
    members: dict[str, list[int]] = {}
    points: dict[str, dict] = {}
    for i, g in enumerate(self.grid):
      key = json.dumps(g, sort_keys=True)
      if key not in members:
        order.append(key)
        members[key] = []
        points[key] = dict(g)
      members[key].append(i)
    return [(points[k], np.asarray(members[k])) for k in order]
