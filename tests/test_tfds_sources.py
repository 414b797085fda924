"""Tests of the TFDS readers, our builders and the host input pipeline.

Nothing here downloads: TFDS's own datasets are mocked
(tfds.testing.mock_data) and ours are built from tiny files the tests
write. The last test checks, in a fresh interpreter, that importing every
library and experiments module imports no TensorFlow.
"""
import io
import json
import os
import subprocess
import sys
import zipfile

import jax
import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

from nearid_jax.data import builders
from nearid_jax.data import errors
from nearid_jax.data import procedural
from nearid_jax.data import registry
from nearid_jax.data import tfds_sources
from nearid_jax.data.builders import falcor3d
from nearid_jax.data.builders import isaac3d
from nearid_jax.data.builders import manual

DS = procedural.DSprites()


@pytest.fixture(scope="module")
def copy_dir(tmp_path_factory):
  """A 40-image array_record copy of procedural dSprites."""
  d = str(tmp_path_factory.mktemp("tfds"))
  builders.materialize(DS, d, num_examples=40, key=jax.random.key(0))
  return d


# ---- TFDS's datasets, mocked -------------------------------------------------


@pytest.mark.parametrize("name,shape,sizes", [
    ("dsprites", (64, 64, 1), (3, 6, 40, 32, 32)),
    ("shapes3d", (64, 64, 3), (10, 10, 10, 8, 4, 15)),
    ("smallnorb", (96, 96, 1), (5, 9, 18, 6)),
    ("mnist", (28, 28, 1), (10,)),
])
def test_readers_give_the_ground_truth_triple(name, shape, sizes):
  with tfds.testing.mock_data(num_examples=12,
                              policy=tfds.testing.MockPolicy.USE_CODE):
    source = tfds_sources.open_source(name)
    image, idx, values = source[5]
    images, idxs, _ = source.read([0, 3, 7])
  assert len(source) == 12 and source.factor_sizes == sizes
  assert image.shape == shape and image.dtype == np.uint8
  assert idx.shape == (len(sizes),) and idx.dtype == np.int32
  assert values.dtype == np.float32 and images.shape == (3,) + shape
  assert (idxs < np.array(sizes)).all() and (idxs >= 0).all()


def test_pipeline_over_mocked_shapes3d():
  with tfds.testing.mock_data(num_examples=20,
                              policy=tfds.testing.MockPolicy.USE_CODE):
    source = tfds_sources.open_source("shapes3d")
    batches = list(tfds_sources.HostPipeline(source, 8, jax.random.key(0),
                                             num_epochs=2))
  assert len(batches) == 4  # 2 full batches per epoch, remainder dropped
  images, idx, values = batches[0]
  assert isinstance(images, jax.Array) and images.dtype == np.float32
  assert images.shape == (8, 64, 64, 3) and idx.shape == (8, 6)
  assert 0.0 <= float(images.min()) and float(images.max()) <= 1.0


# ---- materialised procedural copies --------------------------------------------


def test_materialised_copy_reads_back_the_rendered_images(copy_dir):
  source = tfds_sources.open_source("procedural_dsprites", data_dir=copy_dir)
  assert len(source) == 40 and source.factor_names == DS.factor_names
  images, idx, values = source.read(range(40))
  want = np.asarray(DS.render(idx))
  # PNG stores uint8: within half a grey level of the float render.
  np.testing.assert_allclose(images / 255.0, want, atol=0.5 / 255 + 1e-6)
  np.testing.assert_allclose(values, DS.indices_to_values(idx), rtol=1e-6)
  # The grid points the sampler drew, in its order (chunk c of the copy is
  # sample(fold_in(key, c), 512)).
  _, sampled, _ = DS.sample(jax.random.fold_in(jax.random.key(0), 0), 512)
  np.testing.assert_array_equal(idx, np.asarray(sampled)[:40])


def test_full_grid_materialisation_keeps_grid_order(tmp_path):
  b = builders.materialize(_TinyGrid(), str(tmp_path), name="procedural_tiny")
  source = tfds_sources.from_builder(b)
  images, idx, _ = source.read(range(len(source)))
  np.testing.assert_array_equal(idx, _TinyGrid().all_factor_indices())
  np.testing.assert_allclose(images / 255.0, _TinyGrid().render(idx),
                             atol=0.5 / 255 + 1e-6)


class _TinyGrid(procedural.DSprites):
  """dSprites restricted to a 3 x 2 grid (hash/eq from the dataclass)."""
  factor_sizes = (3, 2)
  factor_names = ("shape", "scale")

  def _factor_value_grid(self):
    return (np.array([1.0, 2.0, 3.0]), np.array([0.5, 1.0]))

  def _render(self, values, key):
    full = jax.numpy.stack([values[0], values[1], 0.0, 0.5, 0.5])
    return super()._render(full, key)


def test_pipeline_is_deterministic_and_covers_every_row_once(copy_dir):
  source = tfds_sources.open_source("procedural_dsprites", data_dir=copy_dir)
  pipe = tfds_sources.HostPipeline(source, 8, jax.random.key(3),
                                   num_epochs=2, drop_remainder=False)
  rows = list(pipe.batch_rows())
  assert len(rows) == 10
  for epoch in (rows[:5], rows[5:]):
    np.testing.assert_array_equal(np.sort(np.concatenate(epoch)),
                                  np.arange(40))
  assert not np.array_equal(rows[0], rows[5])  # reshuffled each epoch
  first = [np.asarray(b[1]) for b in pipe]
  second = [np.asarray(b[1]) for b in tfds_sources.HostPipeline(
      source, 8, jax.random.key(3), num_epochs=2, drop_remainder=False)]
  for a, b in zip(first, second):
    np.testing.assert_array_equal(a, b)
  _, all_idx, _ = source.read(range(40))
  np.testing.assert_array_equal(first[0], all_idx[rows[0]])
  other = list(tfds_sources.HostPipeline(source, 8, jax.random.key(4),
                                         num_epochs=1).batch_rows())
  assert not np.array_equal(other[0], rows[0])


def test_pipeline_stops_early_without_hanging(copy_dir):
  source = tfds_sources.open_source("procedural_dsprites", data_dir=copy_dir)
  pipe = tfds_sources.HostPipeline(source, 4, jax.random.key(0), prefetch=1)
  for step, _ in enumerate(pipe):  # endless: break out of it
    if step == 3:
      break
  with pytest.raises(ValueError, match="fewer than one batch"):
    tfds_sources.HostPipeline(source, 64, jax.random.key(0))


def test_per_host_shards_partition_the_split(copy_dir, monkeypatch):
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  parts = []
  for host in (0, 1):
    monkeypatch.setattr(jax, "process_index", lambda h=host: h)
    src = tfds_sources.open_source("procedural_dsprites", data_dir=copy_dir)
    parts.append(src.read(range(len(src)))[1])
  monkeypatch.undo()
  full = tfds_sources.open_source("procedural_dsprites", data_dir=copy_dir)
  assert [len(p) for p in parts] == [20, 20]
  np.testing.assert_array_equal(np.concatenate(parts),
                                full.read(range(40))[1])


def test_load_in_memory_samples_on_device(copy_dir):
  ds = tfds_sources.load_in_memory("procedural_dsprites", data_dir=copy_dir)
  # The dataset is a pytree: an argument of the jitted step, not a constant.
  step = jax.jit(lambda d, k: d.sample(k, 6))
  images, idx, values = step(ds, jax.random.key(0))
  assert len(jax.tree_util.tree_leaves(ds)) >= 5
  assert images.shape == (6, 64, 64, 1) and idx.shape == (6, 5)
  np.testing.assert_allclose(values, ds.indices_to_values(idx))
  source = tfds_sources.open_source("procedural_dsprites", data_dir=copy_dir)
  shape = int(source.read([0])[1][0, 0])
  _, fidx, _ = ds.sample_fixed(jax.random.key(1), 5, "shape", shape)
  assert (np.asarray(fidx[:, 0]) == shape).all()


# ---- missing or bad data ---------------------------------------------------------


def test_missing_data_errors_name_dataset_directory_and_commands(tmp_path):
  d = str(tmp_path)
  with pytest.raises(errors.DatasetNotFoundError) as e:
    tfds_sources.open_source("dsprites", data_dir=d)
  msg = str(e.value)
  assert "'dsprites'" in msg and os.path.join(d, "dsprites") in msg
  assert f"tfds build dsprites --data_dir={d} --file_format=array_record" in msg
  with pytest.raises(errors.DatasetNotFoundError, match=r"wget .*mpi3d_toy"):
    tfds_sources.open_source("mpi3d", data_dir=d, config="toy")
  with pytest.raises(errors.DatasetNotFoundError,
                     match="builders procedural shapes3d"):
    tfds_sources.open_source("procedural_shapes3d", data_dir=d)
  with pytest.raises(errors.UnknownDatasetError, match="known datasets: "
                     "digits, dsprites, falcor3d"):
    tfds_sources.open_source("cifar10", data_dir=d)
  with pytest.raises(errors.UnknownDatasetError, match="tfds/mpi3d"):
    registry.get("tfds/cifar10")


def test_tfrecord_copy_is_diagnosed_with_the_convert_command(copy_dir,
                                                            tmp_path):
  import shutil  # pylint: disable=g-import-not-at-top
  d = tmp_path / "copy"
  shutil.copytree(copy_dir, d)
  info = d / "procedural_dsprites" / "1.0.0" / "dataset_info.json"
  meta = json.loads(info.read_text())
  meta["fileFormat"] = "tfrecord"
  info.write_text(json.dumps(meta))
  with pytest.raises(errors.DatasetNotFoundError,
                     match="(?s)prepared as tfrecord.*convert_format"):
    tfds_sources.open_source("procedural_dsprites", data_dir=str(d))


_TINY = builders.Mpi3dConfig(name="tiny", filename="tiny.npz",
                             factor_sizes=(2, 1, 1, 1, 1, 2, 3))


def _tiny_mpi3d(manual_dir):
  images = np.zeros((12, 64, 64, 3), np.uint8)
  images += np.arange(12, dtype=np.uint8)[:, None, None, None] * 20
  np.savez(os.path.join(manual_dir, "tiny.npz"), images=images)
  return images


def test_mpi3d_builder_labels_rows_in_grid_order(tmp_path):
  md, dd = tmp_path / "manual", tmp_path / "data"
  md.mkdir()
  images = _tiny_mpi3d(str(md))
  b = builders.prepare("mpi3d", str(md), str(dd), config=_TINY)
  src = tfds_sources.from_builder(b)
  got, idx, _ = src.read(range(12))
  np.testing.assert_array_equal(got, images)
  np.testing.assert_array_equal(
      idx, np.stack(np.unravel_index(np.arange(12), _TINY.factor_sizes), 1))
  assert src.factor_names[0] == "object_color" and src.factor_sizes[-1] == 3


def test_mpi3d_bad_manual_files(tmp_path):
  md, dd = tmp_path / "manual", str(tmp_path / "data")
  md.mkdir()
  with pytest.raises(errors.DatasetNotFoundError, match="tiny.npz"):
    builders.prepare("mpi3d", str(md), dd, config=_TINY)
  np.savez(md / "tiny.npz", images=np.zeros((5, 64, 64, 3), np.uint8))
  with pytest.raises(ValueError, match=r"shape \(5, 64, 64, 3\).*expected"):
    builders.prepare("mpi3d", str(md), dd, config=_TINY)
  _tiny_mpi3d(str(md))
  (md / "SHA256SUMS").write_text("0" * 64 + "  tiny.npz\n")
  with pytest.raises(errors.ChecksumError, match="sha256.*tiny.npz"):
    builders.prepare("mpi3d", str(md), dd, config=_TINY)
  os.remove(md / "SHA256SUMS")
  # Flip one byte of pixel data: the npz member's CRC-32 no longer matches.
  raw = bytearray((md / "tiny.npz").read_bytes())
  raw[len(raw) // 2] ^= 0xFF
  (md / "tiny.npz").write_bytes(bytes(raw))
  with pytest.raises(errors.ChecksumError,
                     match="CRC-32.*'images.npy' of .*tiny.npz"):
    builders.prepare("mpi3d", str(md), dd, config=_TINY)
  with pytest.raises(errors.UnknownDatasetError, match="falcor3d"):
    builders.prepare("mpi4d", str(md), dd)


class _TinyFalcor(falcor3d.Falcor3d, skip_registration=True):
  name = "tiny_falcor3d"
  FACTOR_SIZES = (2, 1, 1, 1, 1, 1, 3)


def _tiny_falcor_zip(path, corrupt_member=None):
  rng = np.random.default_rng(0)
  labels = np.stack(np.meshgrid([0.2, 0.9], [1.0], [1.0], [1.0], [1.0],
                                [1.0], [-1.0, 0.0, 2.5], indexing="ij"),
                    -1).reshape(-1, 7)
  pngs = []
  with zipfile.ZipFile(path, "w") as zf:
    buf = io.BytesIO()
    np.save(buf, labels)
    zf.writestr("Falcor3D_down128/train-rec.labels", buf.getvalue())
    for i in range(len(labels)):
      im = rng.integers(0, 255, (128, 128, 3), dtype=np.uint8)
      b = io.BytesIO()
      Image.fromarray(im).save(b, format="png")
      pngs.append(im)
      zf.writestr(f"Falcor3D_down128/images/{i:06d}.png", b.getvalue())
  if corrupt_member is not None:
    raw = bytearray(open(path, "rb").read())
    with zipfile.ZipFile(path) as zf:
      info = zf.getinfo(corrupt_member)
    raw[info.header_offset + 30 + len(info.filename) + 40] ^= 0xFF
    open(path, "wb").write(bytes(raw))
  return labels, pngs


def test_falcor3d_builder_from_zip_resizes_and_indexes_labels(tmp_path):
  md = tmp_path / "manual"
  md.mkdir()
  labels, pngs = _tiny_falcor_zip(md / "Falcor3D_down128.zip")
  b = manual.prepare("falcor3d", str(md), str(tmp_path / "data"),
                     builder_cls=_TinyFalcor)
  src = tfds_sources.from_builder(b)
  images, idx, values = src.read(range(6))
  assert images.shape == (6, 64, 64, 3)
  want = np.asarray(Image.fromarray(pngs[4]).resize((64, 64), Image.BOX))
  np.testing.assert_array_equal(images[4], want)
  np.testing.assert_array_equal(idx[:, 0], [0, 0, 0, 1, 1, 1])
  np.testing.assert_array_equal(idx[:, 6], [0, 1, 2, 0, 1, 2])
  np.testing.assert_allclose(values, labels)


def test_falcor3d_bad_manual_files(tmp_path):
  md = tmp_path / "manual"
  md.mkdir()
  dd = str(tmp_path / "data")
  with pytest.raises(errors.DatasetNotFoundError,
                     match="(?s)Falcor3D_down128.zip.*gdown 1XAQfFK1x6"):
    manual.prepare("falcor3d", str(md), dd, builder_cls=_TinyFalcor)
  _tiny_falcor_zip(md / "Falcor3D_down128.zip",
                   corrupt_member="Falcor3D_down128/images/000002.png")
  with pytest.raises(errors.ChecksumError, match="images/000002.png"):
    manual.prepare("falcor3d", str(md), dd, builder_cls=_TinyFalcor)
  os.remove(md / "Falcor3D_down128.zip")
  (md / "Falcor3D_down128" / "images").mkdir(parents=True)
  with pytest.raises(errors.DatasetNotFoundError, match="no label file"):
    manual.prepare("falcor3d", str(md), dd, builder_cls=_TinyFalcor)


class _TinyIsaac(isaac3d.Isaac3d, skip_registration=True):
  name = "tiny_isaac3d"
  FACTOR_SIZES = (1, 1, 1, 1, 1, 1, 1, 2, 2)


def test_isaac3d_builder_from_extracted_folder_at_128(tmp_path):
  root = tmp_path / "manual" / "Isaac3D_down128"
  (root / "images").mkdir(parents=True)
  labels = np.zeros((4, 9))
  labels[:, 7] = [0.1, 0.1, 0.7, 0.7]
  labels[:, 8] = [3.0, 5.0, 3.0, 5.0]
  np.save(root / "labels.npy", labels)
  ims = np.random.default_rng(1).integers(0, 255, (4, 128, 128, 3),
                                          dtype=np.uint8)
  for i, im in enumerate(ims):
    Image.fromarray(im).save(root / "images" / f"{i:06d}.png")
  b = manual.prepare("isaac3d", str(tmp_path / "manual"),
                     str(tmp_path / "data"), config="down128",
                     builder_cls=_TinyIsaac)
  images, idx, values = tfds_sources.from_builder(b).read(range(4))
  np.testing.assert_array_equal(images, ims)  # 128: stored as published
  np.testing.assert_array_equal(idx[:, 7:], [[0, 0], [0, 1], [1, 0], [1, 1]])
  np.testing.assert_allclose(values[:, 8], labels[:, 8])


# ---- digits -----------------------------------------------------------------


def test_digits_match_scikit_learn(tmp_path):
  from sklearn import datasets  # pylint: disable=g-import-not-at-top
  ref = datasets.load_digits()
  ds = tfds_sources.load_digits()
  images, idx, _ = ds.arrays()
  assert ds.observation_shape == (8, 8, 1) and ds.num_rows == 1797
  np.testing.assert_allclose(images[..., 0], ref.images / 16.0, atol=0.5 / 255)
  np.testing.assert_array_equal(idx[:, 0], ref.target)
  im7, idx7, _ = ds.sample_fixed(jax.random.key(0), 16, "digit", 7)
  assert (np.asarray(idx7) == 7).all()
  sevens = np.round(ref.images[ref.target == 7] / 16 * 255).reshape(-1, 64)
  got = np.round(np.asarray(im7) * 255).reshape(16, 64)
  assert all((np.abs(sevens - g).max(1) == 0).any() for g in got)
  fallback = tfds_sources.mnist_or_digits(data_dir=str(tmp_path))
  assert fallback.name == "digits"


_IMPORT_EVERYTHING = """
import importlib, pkgutil, sys
from absl import flags
import experiments, nearid_jax
names = []
for pkg in (nearid_jax, experiments):
  names.append(pkg.__name__)
  names += [m.name for m in pkgutil.walk_packages(pkg.__path__,
                                                  pkg.__name__ + ".")]
for name in names:
  # Each binary defines its own --config: drop a module's flags after it.
  before = set(flags.FLAGS)
  importlib.import_module(name)
  for flag in set(flags.FLAGS) - before:
    delattr(flags.FLAGS, flag)
print(len(names), sorted(m for m in sys.modules if m.startswith("tensorflow.")
                         or m == "tensorflow"))
"""


@pytest.mark.timeout(300)
def test_no_module_imports_tensorflow():
  # A fresh interpreter, so the answer does not depend on which tests ran
  # before: every library module and every experiments module (binaries and
  # configs) imported, and TensorFlow still absent.
  out = subprocess.run([sys.executable, "-c", _IMPORT_EVERYTHING],
                       capture_output=True, text=True, check=False,
                       env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert out.returncode == 0, out.stderr[-3000:]
  count, tf_modules = out.stdout.strip().splitlines()[-1].split(" ", 1)
  assert int(count) > 80, out.stdout  # the walk found the library
  assert tf_modules == "[]", out.stdout
