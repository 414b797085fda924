"""Faults and bad input in the trainer, the report and the binaries.

Each test keeps one case of issue 20 fixed: a resume with other chunk
settings, two writers on one workdir, a corrupt or missing checkpoint, a
full disk, a report rerun with other settings, and the binaries' one-line
errors. Faults are made for real: a run interrupted after a chunk, files
truncated in a temporary directory, a second process holding the lock, a
tiny tmpfs (when this process may mount one).
"""
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from unittest import mock

import pytest

from nearid_jax import checkpoint
from nearid_jax import cli
from nearid_jax import report
from nearid_jax import train
from nearid_jax import workdir

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(**overrides):
  c = train.default_config()
  c.model.encoder_widths = c.model.decoder_widths = (8,)
  c.data.obs_dim, c.data.latent_dim, c.data.eval_size = 4, 2, 32
  c.num_seeds, c.num_steps, c.batch_size = 2, 40, 16
  c.log_every, c.checkpoint_every = 10, 20
  c.num_devices, c.progress = 1, False
  c.update_from_flattened_dict(overrides)
  return c


def _checksums(summary):
  return [r["param_checksum"] for r in summary["runs"]]


def _steps(workdir_path):
  with open(os.path.join(workdir_path, "metrics.jsonl")) as f:
    return [json.loads(l)["step"] for l in f if l.strip()]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
  """An uninterrupted run: the reference every recovery must reproduce."""
  path = str(tmp_path_factory.mktemp("reference"))
  return path, train.run(tiny_config(), path)


def _copy(finished, tmp_path, name):
  dst = str(tmp_path / name)
  shutil.copytree(finished[0], dst)
  return dst


class _Stop(Exception):
  pass


def _stop_at(step):
  def on_chunk(end):
    if end == step:
      raise _Stop(end)
  return on_chunk


def test_resume_with_other_chunking_trains_exactly_num_steps(finished,
                                                             tmp_path):
  # Case 1: interrupted at step 30 (latest checkpoint 20), resumed with
  # log_every 8 / checkpoint_every 16 (20 is not a multiple of 8): the
  # chunks realign (20 -> 24 -> 32 -> 40), nothing trains past num_steps,
  # a checkpoint is taken at 32 and at num_steps, and the parameters are
  # bitwise those of the uninterrupted run.
  path = str(tmp_path / "w")
  with pytest.raises(_Stop):
    train.run(tiny_config(), path, on_chunk=_stop_at(30))
  seen = []
  resumed = train.run(tiny_config(log_every=8, checkpoint_every=16), path,
                      on_chunk=seen.append)
  assert seen == [24, 32, 40]
  assert resumed["num_steps"] == 40
  assert _checksums(resumed) == _checksums(finished[1])
  assert _steps(path) == [10, 20, 24, 32, 40]
  with checkpoint.Checkpointer(os.path.join(path, "checkpoints")) as ckpt:
    assert ckpt.all_steps() == [32, 40]
  assert train.driver.chunk_bounds(1500, 4000, 400)[:2] == [(1500, 1600),
                                                           (1600, 2000)]
  assert train.driver.chunk_bounds(1500, 4000, 400)[-1] == (3600, 4000)


_HOLD_LOCK = textwrap.dedent("""
    import sys, time
    from nearid_jax import workdir
    with workdir.lock(sys.argv[1]):
      print("locked", flush=True)
      time.sleep(120)
""")


def test_one_writer_per_workdir(tmp_path):
  # Case 2: a second process on a locked workdir is refused with the
  # holder's pid; the lock dies with its holder (SIGKILL), so a stale
  # .lock file does not block the next job.
  path = str(tmp_path / "w")
  holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, path],
                            stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": REPO})
  try:
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(workdir.WorkdirInUse,
                       match=rf"workdir .*w' is in use by pid {holder.pid}"):
      train.run(tiny_config(), path)
    with pytest.raises(workdir.WorkdirInUse, match="in use"):
      with workdir.lock(path):
        pass
    assert not os.path.exists(os.path.join(path, "config.json"))
  finally:
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=60)
  assert os.path.exists(os.path.join(path, ".lock"))  # stale, yet free
  with workdir.lock(path):
    with workdir.lock(path):  # re-entrant within a process
      pass


def _damage(path, step, how):
  step_dir = os.path.join(path, "checkpoints", str(step), "default")
  if how == "truncate":
    for f in glob.glob(os.path.join(step_dir, "**", "d", "*"),
                       recursive=True):
      with open(f, "r+b") as fh:
        fh.truncate(os.path.getsize(f) // 2)
  else:  # an empty manifest
    open(os.path.join(step_dir, "manifest.ocdbt"), "w").close()


def test_corrupt_latest_checkpoint_falls_back_or_fails_in_one_line(
    finished, tmp_path):
  # Case 6: the latest step (40) is truncated: the trainer warns, resumes
  # from the newest intact step (20) and reproduces the reference run; the
  # unreadable step is kept aside. With strict (and for analysis, which
  # must not silently read an earlier state) it is one line naming the
  # step and the directory.
  path = _copy(finished, tmp_path, "truncated")
  _damage(path, 40, "truncate")
  seen = []
  recovered = train.run(tiny_config(), path, on_chunk=seen.append)
  assert seen == [30, 40]
  assert _checksums(recovered) == _checksums(finished[1])
  assert os.path.isdir(os.path.join(path, "checkpoints.corrupt", "40"))

  path = _copy(finished, tmp_path, "manifest")
  _damage(path, 40, "manifest")
  for call in (lambda: train.run(tiny_config(), path, strict=True),
               lambda: train.load_trained(path)):
    with pytest.raises(checkpoint.CorruptCheckpoint) as e:
      call()
    msg = str(e.value)
    assert "\n" not in msg and len(msg) < 700, msg
    assert f"step 40 in {os.path.join(path, 'checkpoints')}" in msg


def test_missing_checkpoints_beside_final_json_is_refused(finished,
                                                          tmp_path):
  # Case 8: deleting checkpoints/ must not silently retrain and overwrite
  # the finished run's final.json.
  path = _copy(finished, tmp_path, "no_ckpt")
  shutil.rmtree(os.path.join(path, "checkpoints"))
  before = open(os.path.join(path, "final.json")).read()
  with pytest.raises(ValueError, match=r"final.json.*no checkpoints.*"
                     r"--overwrite"):
    train.run(tiny_config(), path)
  assert open(os.path.join(path, "final.json")).read() == before


def test_full_disk_surfaces_at_once(tmp_path):
  # Case 8: with no room for a checkpoint the run stops at the first save
  # with ENOSPC naming the directory (not after the whole run, from a
  # background thread), and the binaries print it in one line.
  mnt = tmp_path / "small"
  mnt.mkdir()
  proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs",
                         str(mnt)], capture_output=True, check=False)
  if proc.returncode:
    pytest.skip("cannot mount a small tmpfs here (needs root)")
  try:
    with pytest.raises(OSError) as e:
      train.run(tiny_config(), str(mnt / "w"))
    assert e.value.errno == 28
    assert _steps(str(mnt / "w")) == [10, 20]
    line = cli.describe(e.value)
    assert line.startswith("disk full writing ") and "checkpoints" in line
  finally:
    subprocess.run(["umount", str(mnt)], check=False)


def test_report_names_the_changed_field(tmp_path):
  # Case 8: a rerun with other settings names the field, not ['train'];
  # the one list of resumable fields applies inside the report too.
  old = report.default_config()
  (tmp_path / "report.json").write_text(json.dumps(
      {"config": json.loads(json.dumps(old.to_dict(), default=str))}))
  new = report.default_config()
  new.train.num_seeds = 3
  new.train.log_every = 50
  with pytest.raises(ValueError, match=r"different settings \(train\."
                     r"num_seeds: 8 -> 3\)\. "):
    report.run(new, str(tmp_path))
  assert train.config_diff(old, new, section="train.") == [
      "train.num_seeds: 8 -> 3"]
  assert train.config_diff(old.train, new.train) == ["num_seeds: 8 -> 3"]


def _binary(*args):
  return subprocess.run([sys.executable, "-m", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=300,
                        check=False)


@pytest.mark.slow
def test_binaries_end_user_errors_in_one_line(tmp_path):
  # Case 7: a field a locked config lacks (a 55-line AttributeError before),
  # a truncated .npz (a bare BadZipFile), each one line and exit 1; the
  # traceback comes back with --verbosity=1.
  bad_flag = ["experiments.train",
              "--config=experiments/configs/synthetic_ae.py:smoke",
              f"--workdir={tmp_path / 't'}", "--config.grid.num_seeds=(1,2)"]
  proc = _binary(*bad_flag)
  assert proc.returncode == 1, proc.stderr[-2000:]
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith(
      "error: --config.grid.num_seeds: no such field"), proc.stderr
  assert "learning_rate" in lines[0]  # the fields the section has
  verbose = _binary(*bad_flag, "--verbosity=1")
  assert verbose.returncode != 0 and "Traceback" in verbose.stderr

  train_dir = tmp_path / "train"
  train_dir.mkdir()
  (train_dir / "representations.npz").write_bytes(b"PK\x03\x04truncated")
  proc = _binary("experiments.identifiability",
                 "--config=experiments/configs/identifiability.py:smoke",
                 f"--workdir={tmp_path / 'r'}",
                 f"--config.train_workdir={train_dir}")
  assert proc.returncode == 1, proc.stderr[-2000:]
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
  assert str(train_dir / "representations.npz") in lines[0]
  assert "truncated" in lines[0]


def test_config_is_checked_once_per_job():
  # Issue 13: the train section is checked by one function, once (the
  # Trainer, reached through get_trainer / run / make_train); the report
  # checks only its own section and leaves the train section to train.run.
  config = tiny_config(seed=987)  # a config no other test built
  check = train.config.validate_config
  with mock.patch.object(train.trainer, "validate_config",
                         wraps=check) as inner, \
       mock.patch.object(train, "validate_config", wraps=check) as outer:
    train.get_trainer(config)
    train.get_trainer(config)
    report.validate_config(report.default_config())
  assert inner.call_count + outer.call_count == 1
