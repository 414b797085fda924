"""Several processes as one job (jax.distributed) on one machine.

2 processes x 2 CPU devices on loopback stand in for a pod's hosts: the
binaries join through `--coordinator_address/--num_processes/--process_id`
(nearid_jax.distributed), spread the runs over the 4 global devices, and
must give the numbers of one process with 4 devices, write every file once,
fail fast when a peer dies, and resume across topologies. Each child gets
its own XLA_FLAGS (conftest's 8 devices are for this process) and its own
session, which the fixture kills whatever happens.
"""
from __future__ import annotations

import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from nearid_jax import distributed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_CONFIG = os.path.join(ROOT, "experiments", "configs", "synthetic_ae.py")
REPORT_CONFIG = os.path.join(ROOT, "experiments", "configs",
                             "identifiability.py")
# The smallest training that still checkpoints twice (steps 10 and 20).
TRAIN = dict(num_seeds=3, num_steps=20, log_every=10, checkpoint_every=10,
             progress=False)
TRAIN_ARGS = [f"--config.{k}={v}" for k, v in TRAIN.items()] + [
    "--config.data.eval_size=128"]
REPORT_ARGS = [f"--config.train.{a[len('--config.'):]}" for a in TRAIN_ARGS
               ] + ["--config.kinds=('linear',)",
                    "--config.structural_kinds=('linear',)",
                    "--config.metrics=()", "--config.bootstrap=100",
                    "--config.bi_lipschitz_points=4",
                    "--config.infoe_converged_iter=0"]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


class Jobs:
  """Starts binaries as 1 process or as a cluster; kills what is left."""

  def __init__(self, tmp):
    self.tmp = tmp
    self.procs: list[subprocess.Popen] = []

  def start(self, module, args, *, processes=1, devices=4, name="job",
            extra=()):
    """Starts `processes` processes of `module`; returns [(proc, log)]."""
    # Only the flags below decide how a child joins (not this machine's
    # JAX_* or launcher variables).
    env = {k: v for k, v in os.environ.items()
           if k not in (*distributed.ENV.values(), *distributed.LAUNCHERS)}
    env.update(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
               JAX_PLATFORMS="cpu", TQDM_DISABLE="1")
    cluster = []
    if processes > 1:
      port = _free_port()
      cluster = [f"--coordinator_address=127.0.0.1:{port}",
                 f"--num_processes={processes}"]
    out = []
    for i in range(processes):
      log = os.path.join(self.tmp, f"{name}.{i}.log")
      ids = [f"--process_id={i}"] if processes > 1 else []
      with open(log, "w") as f:
        p = subprocess.Popen(
            [sys.executable, "-m", module, *args, *cluster, *ids, *extra],
            cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=_no_core_dumps)
      self.procs.append(p)
      out.append((p, log))
    return out

  def wait(self, job, timeout):
    """Return codes and logs of a job's processes (all must end in time)."""
    deadline = time.time() + timeout
    for p, log in job:
      try:
        p.wait(timeout=max(deadline - time.time(), 0.1))
      except subprocess.TimeoutExpired:
        pytest.fail(f"{log}: still running after {timeout} s:\n"
                    + _tail(log))
    return [p.returncode for p, _ in job], [_read(log) for _, log in job]

  def kill_all(self):
    for p in self.procs:
      if p.poll() is None:
        try:
          os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
          pass
        p.wait()


def _no_core_dumps():
  # The survivor of a killed peer is ended by jax with an abort.
  resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _read(path):
  with open(path) as f:
    return f.read()


def _tail(path, n=3000):
  return _read(path)[-n:]


@pytest.fixture(scope="module")
def jobs(tmp_path_factory):
  j = Jobs(str(tmp_path_factory.mktemp("multihost")))
  try:
    yield j
  finally:
    j.kill_all()


@pytest.fixture(scope="module")
def reports(jobs):
  """The tiny report on 1 process x 4 devices and on 2 x 2, side by side."""
  one_dir, two_dir = (os.path.join(jobs.tmp, n) for n in ("one", "two"))
  base = ["--config=" + REPORT_CONFIG, *REPORT_ARGS]
  one = jobs.start("experiments.identifiability",
                   base + ["--workdir=" + one_dir], devices=4, name="one")
  two = jobs.start("experiments.identifiability",
                   base + ["--workdir=" + two_dir], processes=2, devices=2,
                   name="two")
  # The waits add up to less than the test's timeout, so a hang fails here
  # and the fixture still kills the processes (pytest-timeout would not).
  rc_one, logs_one = jobs.wait(one, 250)
  rc_two, logs_two = jobs.wait(two, 250)
  assert rc_one == [0], logs_one[0][-3000:]
  assert rc_two == [0, 0], "\n".join(l[-3000:] for l in logs_two)
  return one_dir, two_dir, logs_two


def _numbers(tree, path=""):
  """{json path: float} of every number in a report.json tree."""
  out = {}
  if isinstance(tree, dict):
    for k, v in tree.items():
      if k not in ("timing_s", "config"):
        out.update(_numbers(v, f"{path}/{k}"))
  elif isinstance(tree, list):
    for i, v in enumerate(tree):
      out.update(_numbers(v, f"{path}/{i}"))
  elif isinstance(tree, (int, float)) and not isinstance(tree, bool):
    out[path] = float(tree)
  return out


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_two_processes_write_one_report_equal_to_one_process(reports, jobs):
  one_dir, two_dir, logs = reports
  # The primary alone writes and prints; the other process only computes.
  assert "Report:" in logs[0] and "Report:" not in logs[1]
  assert "error" not in logs[1].lower(), logs[1][-3000:]
  for name in ("report.json", "report.md", "train/final.json",
               "train/representations.npz"):
    assert os.path.exists(os.path.join(two_dir, name)), name
  with open(os.path.join(one_dir, "report.json")) as f:
    want = _numbers(json.load(f))
  with open(os.path.join(two_dir, "report.json")) as f:
    got = _numbers(json.load(f))
  assert got.keys() == want.keys()
  assert len(want) > 20
  keys = sorted(want)
  np.testing.assert_allclose([got[k] for k in keys], [want[k] for k in keys],
                             rtol=1e-4, atol=1e-6, err_msg=str(keys))
  a = np.load(os.path.join(one_dir, "train", "representations.npz"))
  b = np.load(os.path.join(two_dir, "train", "representations.npz"))
  np.testing.assert_allclose(b["z/latent"], a["z/latent"], rtol=1e-5,
                             atol=1e-6)
  # No process is left behind.
  assert all(p.poll() is not None for p in jobs.procs)


def _final_losses(workdir):
  with open(os.path.join(workdir, "final.json")) as f:
    return np.array([r["final_loss"] for r in json.load(f)["runs"]])


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_resume_four_device_checkpoint_on_one_device_and_two_processes(
    reports, jobs):
  """Step 10 of the 4-device run resumes on 1 device and on 2 x 2."""
  src = os.path.join(reports[0], "train")
  want = _final_losses(src)
  started = []
  for name, processes, devices in (("dev1", 1, 1), ("proc2", 2, 2)):
    work = os.path.join(jobs.tmp, name)
    shutil.copytree(src, work)
    shutil.rmtree(os.path.join(work, "checkpoints", "20"))
    for f in ("final.json", "representations.npz"):
      os.remove(os.path.join(work, f))
    started.append((work, jobs.start(
        "experiments.train", ["--config=" + TRAIN_CONFIG, *TRAIN_ARGS,
                              "--workdir=" + work],
        processes=processes, devices=devices, name=name)))
  for work, job in started:
    rc, logs = jobs.wait(job, 250)
    assert rc == [0] * len(job), "\n".join(l[-3000:] for l in logs)
    assert "from step 10 of 20" in logs[0]
    np.testing.assert_allclose(_final_losses(work), want, rtol=1e-4)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_killed_process_ends_the_job_with_an_error_and_rerun_resumes(jobs):
  """SIGKILL of process 1 ends process 0 within the heartbeat timeout."""
  work = os.path.join(jobs.tmp, "killed")
  args = ["--config=" + TRAIN_CONFIG, *TRAIN_ARGS, "--config.num_steps=100",
          "--workdir=" + work]
  job = jobs.start("experiments.train", args, processes=2, devices=2,
                   name="killed", extra=["--heartbeat_timeout_s=5"])
  first = os.path.join(work, "checkpoints", "10")
  deadline = time.time() + 200
  while not os.path.isdir(first):
    assert all(p.poll() is None for p, _ in job), _tail(job[0][1])
    assert time.time() < deadline, "no checkpoint after 200 s"
    time.sleep(0.1)
  job[1][0].send_signal(signal.SIGKILL)
  t0 = time.time()
  rc, logs = jobs.wait(job[:1], 60)
  waited = time.time() - t0
  assert rc[0] != 0
  assert waited < 60
  # jax's coordination service names the cause.
  assert "another task died" in logs[0] or "heartbeat" in logs[0], (
      logs[0][-3000:])
  assert not os.path.exists(os.path.join(work, "final.json"))
  # The rerun resumes on one device (one process is cheaper to start here;
  # any topology resumes, see the test above).
  rerun = jobs.start("experiments.train", args, devices=1, name="rerun")
  rc, logs = jobs.wait(rerun, 200)
  assert rc == [0], logs[0][-3000:]
  resumed = re.search(r"Resuming .* from step (\d+) of 100", logs[0])
  assert resumed and int(resumed.group(1)) >= 10, logs[0][-3000:]
  with open(os.path.join(work, "final.json")) as f:
    assert json.load(f)["num_steps"] == 100
  assert all(p.poll() is not None for p in jobs.procs)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_unreachable_coordinator_is_one_clear_error(jobs):
  job = jobs.start("experiments.train",
                   ["--config=" + TRAIN_CONFIG, "--workdir=" +
                    os.path.join(jobs.tmp, "alone"),
                    f"--coordinator_address=127.0.0.1:{_free_port()}",
                    "--num_processes=2", "--process_id=1",
                    "--initialization_timeout_s=3"], devices=1, name="alone")
  rc, logs = jobs.wait(job, 90)
  assert rc == [1], logs[0][-3000:]
  last = logs[0].strip().splitlines()[-1]
  assert last.startswith("error: could not join the coordinator "
                         "127.0.0.1:"), last
  assert "within 3 s" in last and "--process_id" in last
  assert "Traceback" not in logs[0]


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_processes=2), "not --coordinator_address, --process_id"),
    (dict(coordinator_address="h:1", process_id=0), "not --num_processes"),
    (dict(coordinator_address="nohost", num_processes=2, process_id=0),
     "expected HOST:PORT"),
    (dict(coordinator_address="h:1", num_processes=2, process_id=2),
     "must be in [0, 1]"),
    (dict(coordinator_address="h:1", num_processes="two", process_id=0),
     "expected an integer"),
])
def test_resolve_rejects_inconsistent_values(kwargs, message):
  with pytest.raises(ValueError, match=r".*" + message.replace(
      "[", r"\[").replace("]", r"\]")):
    distributed.resolve(environ={}, **kwargs)


def test_resolve_reads_the_environment_and_launchers():
  env = {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "4",
         "JAX_PROCESS_ID": "3"}
  assert distributed.resolve(environ=env) == distributed.Cluster(
      True, "10.0.0.1:1234", 4, 3)
  # Flags win over the environment; "off" never joins.
  assert distributed.resolve(process_id=1, environ=env).process_id == 1
  assert not distributed.resolve("off", environ=env).join
  # A launcher that started several tasks joins by detection.
  assert distributed.resolve(environ={"SLURM_STEP_NUM_TASKS": "8"}) == (
      distributed.Cluster(True))
  assert not distributed.resolve(environ={"SLURM_STEP_NUM_TASKS": "1"}).join
  assert distributed.resolve("on", environ={}).join


def test_processes_that_do_not_write_check_the_workdir_alike(tmp_path):
  """A refused workdir ends every process with the same error (no process
  is left waiting for a primary that stopped)."""
  from nearid_jax import train  # pylint: disable=g-import-not-at-top
  from nearid_jax.train import driver  # pylint: disable=g-import-not-at-top
  config = train.default_config()
  (tmp_path / "config.json").write_text(json.dumps(config.to_dict()))
  other = train.default_config()
  other.num_seeds += 1
  for write in (True, False):
    with pytest.raises(ValueError, match="num_seeds: 8 -> 9"):
      driver._prepare_workdir(other, str(tmp_path), False, write=write)  # pylint: disable=protected-access
  # A process that does not write leaves the workdir as it is.
  driver._prepare_workdir(other, str(tmp_path / "new"), False, write=False)  # pylint: disable=protected-access
  assert not (tmp_path / "new").exists()
