"""Materialise a procedural dataset to array_record, to share a fixed copy.

    builder = materialize(DSprites(), "/data/tfds")           # the full grid
    builder = materialize(Shapes3D(), "/data/tfds", num_examples=50_000,
                          key=jax.random.key(0))               # a sample
    source = tfds_sources.open_source("procedural_shapes3d",
                                      data_dir="/data/tfds")

Images are quantised to uint8 PNG (at most 1/510 from the float render),
examples keep grid order (or sample order), and metadata.json records the
factor names, sizes and value grids, so `tfds_sources` reads the copy back
in the same (images, factor indices, factor values) form. No TensorFlow.
"""
from __future__ import annotations

import jax
import numpy as np
import tensorflow_datasets as tfds

from nearid_jax.data import ground_truth
from nearid_jax.data.builders import base

PREFIX = "procedural_"


class ProceduralBuilder(base.FactorBuilder, skip_registration=True):
  """Writes the images of a GroundTruthDataset (set per subclass)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Rendered by nearid_jax.data.procedural."}
  DATASET: ground_truth.GroundTruthDataset
  NUM_EXAMPLES: int | None = None
  KEY_DATA: tuple[int, ...] = ()
  BATCH = 512

  def _info(self) -> tfds.core.DatasetInfo:
    ds = self.DATASET
    return self.dataset_info_from_configs(
        description=f"{ds.name} rendered by nearid_jax "
                    f"({'full grid' if self.NUM_EXAMPLES is None else f'{self.NUM_EXAMPLES} samples'}).",
        features=base.factor_features(ds.observation_shape, ds.factor_names,
                                      ds.factor_sizes),
        metadata=base.factor_metadata(
            ds.factor_names, ds.factor_sizes, ds.factor_values,
            source=PREFIX + ds.name, dataset_repr=repr(ds),
            num_examples_requested=self.NUM_EXAMPLES,
            categorical=list(ds.categorical),
            symmetries=list(ds.symmetries)),
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"train": self._generate_examples()}

  def _chunks(self):
    ds = self.DATASET
    key = (jax.random.wrap_key_data(np.asarray(self.KEY_DATA, np.uint32))
           if self.KEY_DATA else None)
    if self.NUM_EXAMPLES is None:
      yield from ds.enumerate_grid(self.BATCH, key=key)
      return
    for c, start in enumerate(range(0, self.NUM_EXAMPLES, self.BATCH)):
      m = min(self.BATCH, self.NUM_EXAMPLES - start)
      images, idx, values = ds.sample(jax.random.fold_in(key, c), self.BATCH)
      yield images[:m], idx[:m], values[:m]

  def _generate_examples(self):
    ds = self.DATASET
    i = 0
    for images, idx, values in self._chunks():
      images = np.asarray(np.round(np.clip(images, 0, 1) * 255), np.uint8)
      idx, values = np.asarray(idx), np.asarray(values)
      for im, ix, v in zip(images, idx, values):
        yield i, base.example(base.png_bytes(im), ds.factor_names, ix, v)
        i += 1


def materialize(dataset: ground_truth.GroundTruthDataset, data_dir: str, *,
                num_examples: int | None = None,
                key: jax.Array | None = None,
                name: str | None = None) -> tfds.core.DatasetBuilder:
  """Renders `dataset` into a TFDS array_record dataset under `data_dir`.

  Args:
    dataset: any GroundTruthDataset with a renderer.
    data_dir: TFDS data directory; the copy lands in
      `<data_dir>/<name>/1.0.0/`.
    num_examples: None for the full factor grid in grid order, else that
      many samples, in chunks of 512: chunk c is
      `dataset.sample(jax.random.fold_in(key, c), 512)`.
    key: PRNG key for sampling and for nuisance (required then).
    name: dataset name (default `procedural_<dataset.name>`).

  Returns:
    The prepared builder; `builder.as_data_source()` reads it back.

  Examples:
    >>> import jax, tempfile
    >>> from nearid_jax.data.procedural import DSprites
    >>> with tempfile.TemporaryDirectory() as d:
    ...   b = materialize(DSprites(), d, num_examples=4, key=jax.random.key(0))
    ...   print(len(b.as_data_source("train")))
    4
  """
  if (num_examples is not None or dataset.has_nuisance) and key is None:
    raise TypeError("a key is required to sample examples or nuisance.")
  if num_examples is not None:
    num_examples = ground_truth.check_n(num_examples)
  name = name or PREFIX + dataset.name
  key_data = (tuple(int(x) for x in np.asarray(jax.random.key_data(key)).ravel())
              if key is not None else ())
  cls = type(_class_name(name), (ProceduralBuilder,),
             {"name": name, "DATASET": dataset, "NUM_EXAMPLES": num_examples,
              "KEY_DATA": key_data, "__module__": __name__},
             skip_registration=True)
  builder = cls(data_dir=data_dir, file_format="array_record")
  base.prepare_quietly(builder, file_format="array_record")
  return builder


def _class_name(name: str) -> str:
  return "".join(p.capitalize() for p in name.split("_")) or "Procedural"
