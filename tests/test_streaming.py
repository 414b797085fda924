"""Streamed stored data: Grain on the host, batches as arguments of the step.

The stored set is written here, in the test's temp dir: 6,144 128x128x3
images, 288 MB as the uint8 arrays a resident set would put on the device
(the PNG files are small: 16 distinct images, so writing takes a second).
"""
import hashlib

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from nearid_jax import train
from nearid_jax.data import images
from nearid_jax.data import streaming
from nearid_jax.data.builders import base

_SIZES = (4, 4)


class _Big(base.FactorBuilder, skip_registration=True):
  """Images whose colour follows factor a and stripe width factor b."""
  name = "procedural_big"
  VERSION = tfds.core.Version("1.0.0")
  ROWS, SIDE = 6144, 128

  def _info(self):
    return self.dataset_info_from_configs(
        features=base.factor_features((self.SIDE, self.SIDE, 3), ("a", "b"),
                                      _SIZES),
        metadata=base.factor_metadata(
            ("a", "b"), _SIZES, [np.arange(s, dtype=float) for s in _SIZES]),
        disable_shuffling=True)

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"train": self._generate_examples()}

  def _generate_examples(self):
    rows = np.arange(self.SIDE)[:, None]
    pngs = {}
    for a in range(_SIZES[0]):
      for b in range(_SIZES[1]):
        im = np.zeros((self.SIDE, self.SIDE, 3), np.uint8)
        im[..., a % 3] = 60 * (a + 1)
        im[..., 2] = np.where((rows // (4 * (b + 1))) % 2 == 0, 200, 0)
        pngs[a, b] = base.png_bytes(im)
    for i in range(self.ROWS):
      a, b = i % 4, (i // 4) % 4
      yield i, base.example(pngs[a, b], ("a", "b"), (a, b),
                            (float(a), float(b)))


@pytest.fixture(scope="module")
def big_dir(tmp_path_factory):
  d = str(tmp_path_factory.mktemp("big"))
  base.prepare_quietly(_Big(data_dir=d, file_format="array_record"),
                       file_format="array_record")
  return d


def stream_config(data_dir, **overrides):
  c = train.default_config()
  c.data = images.default_config()
  c.data.update(dict(dataset="tfds/procedural_big", data_dir=data_dir,
                     label_factor="a", image_size=16, eval_size=64,
                     resident_max_mb=64))
  c.model.encoder_widths = c.model.decoder_widths = (16,)
  c.model.latent_dim = 2
  c.num_seeds, c.num_steps, c.batch_size = 2, 40, 16
  c.log_every, c.checkpoint_every = 10, 20
  c.num_devices, c.mesh.data = 2, 2  # one run shard, batch over 2 devices
  c.progress = False
  c.update_from_flattened_dict(overrides)
  return c


def test_large_stored_set_is_streamed_not_compiled_in(big_dir):
  # Two run shards, no data shards: each device gets the whole chunk.
  config = stream_config(big_dir, **{"mesh.data": 1})
  assert images.stored_rows_and_mb(config.data) == (6144, 288.0)
  trainer = train.get_trainer(config)
  assert trainer.streamed
  with pytest.raises(ValueError, match="resident_max_mb"):
    train.make_train(config)
  with pytest.raises(ValueError, match="resident_max_mb = 64"):
    trainer.data.sample(jax.random.key(0), 2)
  feed = trainer.feed()
  batches = feed.next_chunk(10)
  assert batches[0].shape == (10, 16, 128, 128, 3)
  assert batches[0].dtype == np.uint8
  state = trainer.init_jit(jax.random.key(0))
  lowered = trainer.chunk_jit.lower(state, jax.random.key(0), length=10,
                                    batches=batches)
  hlo = lowered.as_text()
  # 288 MB of images, and not one chunk of them, is in the program: the
  # batches are its arguments.
  assert len(hlo) < 2 << 20, len(hlo)
  main = next(l for l in hlo.splitlines() if "func.func public @main" in l)
  assert "tensor<10x16x128x128x3xui8>" in main
  # The first step's loss is that of the first streamed batch, by hand
  # (the autoencoder's loss draws no randomness).
  hp = {k: v[1] for k, v in trainer.runs.hparams.items()}
  variables = {"params": jax.tree.map(lambda x: x[1], state.params)}
  first = jax.tree.map(lambda b: b[0], batches)
  want, _ = trainer.loss_fn(hp)(variables, trainer.data.prepare(first),
                                jax.random.key(0))
  _, metrics = lowered.compile()(state, jax.random.key(0), batches=batches)
  loss = np.asarray(metrics["loss"])[:2]
  assert loss.shape == (2, 10) and np.isfinite(loss).all()
  np.testing.assert_allclose(loss[1, 0], want, rtol=1e-5)


def _recording(monkeypatch):
  seen = []
  next_chunk = streaming.StreamFeed.next_chunk

  def record(self, length):
    out = next_chunk(self, length)
    seen.append(hashlib.sha256(np.asarray(out[0]).tobytes()
                               + np.asarray(out[1]).tobytes()).hexdigest())
    return out
  monkeypatch.setattr(streaming.StreamFeed, "next_chunk", record)
  return seen


class _Stop(Exception):
  pass


def test_interrupted_streamed_run_resumes_the_same_batches(
    big_dir, tmp_path, monkeypatch):
  config = stream_config(big_dir)
  seen = _recording(monkeypatch)
  reference = train.run(config, str(tmp_path / "uninterrupted"))
  full = list(seen)
  assert len(full) == 4 and len(set(full)) == 4

  def stop(step):
    if step == 30:  # after the step-20 checkpoint
      raise _Stop
  seen.clear()
  with pytest.raises(_Stop):
    train.run(config, str(tmp_path / "killed"), on_chunk=stop)
  assert seen[:3] == full[:3]
  seen.clear()
  resumed = train.run(config, str(tmp_path / "killed"))
  assert seen == full[2:]  # the loader state saved at step 20
  assert ([r["param_checksum"] for r in resumed["runs"]]
          == [r["param_checksum"] for r in reference["runs"]])
  assert ([r["final_loss"] for r in resumed["runs"]]
          == [r["final_loss"] for r in reference["runs"]])
  assert all(np.isfinite(r["eval_loss"]) for r in resumed["runs"])


def test_feed_order_covers_each_row_once_per_epoch_and_resumes():
  rows = streaming.batch_rows(40, 8, seed=3)
  epoch = np.concatenate([rows[k] for k in range(5)])
  np.testing.assert_array_equal(np.sort(epoch), np.arange(40))
  nxt = np.concatenate([rows[k] for k in range(5, 10)])
  assert not np.array_equal(epoch, nxt)  # reshuffled each epoch
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  feed = streaming.StreamFeed(lambda r: (r,), 40, 8, 3, sharding)
  first = np.asarray(feed.next_chunk(3)[0])
  np.testing.assert_array_equal(first, np.stack([rows[k] for k in range(3)]))
  again = streaming.StreamFeed(lambda r: (r,), 40, 8, 3, sharding,
                               state=feed.position)
  np.testing.assert_array_equal(np.asarray(again.next_chunk(2)[0]),
                                np.stack([rows[3], rows[4]]))
  with pytest.raises(ValueError, match="fewer than one batch"):
    streaming.batch_rows(5, 8, seed=0)
