"""Stages trained at once (`train.parallel_stages`, `train.stage_workers`): pinned worker
processes train the same stages as training them in turn, hand them to the main run in name
order, and stop cleanly on SIGTERM."""
import json
import os

import numpy as np
import pytest

from train_runs import ROOT, losses, run_train, sigterm_when_ready, start_train
from vitron_jax.train import stage_workers as SW
from vitron_jax.train.defaults import base_config

CONFIG = f'''
import sys
sys.path.insert(0, {str(ROOT / "experiments")!r})
import ml_collections
import lm_synthetic


def get_config(arg=""):
  c = lm_synthetic.get_config("test")
  c.train.steps = 2
  stages = {{}}
  for name, seed in (("a_first", 1), ("b_second", 2)):
    s = lm_synthetic.get_config("test")
    s.train.seed = seed
    s.train.steps = 4
    stages[name] = s
  c.stages = ml_collections.ConfigDict(stages)
  return c
'''
STAGES = ("a_first", "b_second")
two_cpus = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2,
                              reason="parallel stages need at least 2 CPUs")


@pytest.fixture
def config_file(tmp_path):
  path = tmp_path / "staged.py"
  path.write_text(CONFIG)
  return str(path)


def test_cpu_groups_split_the_cpus_round_robin():
  assert SW.cpu_groups(2, [0, 1, 2, 3]) == [(0, 2), (1, 3)]
  assert SW.cpu_groups(3, [4, 5, 6, 7]) == [(4, 7), (5,), (6,)]
  assert SW.cpu_groups(1, [0, 1]) == [(0, 1)]
  with pytest.raises(ValueError, match="only 2 CPUs"):
    SW.cpu_groups(3, [0, 1])
  with pytest.raises(ValueError, match=">= 1"):
    SW.cpu_groups(0, [0, 1])


def test_parallel_stages_are_refused_where_they_cannot_run(monkeypatch):
  c = base_config()
  SW.check_allowed(c, 2)  # a CPU host (the tests' JAX_PLATFORMS=cpu)
  c.distributed.enabled = True
  with pytest.raises(ValueError, match="multi-host"):
    SW.check_allowed(c, 2)
  SW.check_allowed(c, 1)
  c.distributed.enabled = False
  monkeypatch.setenv("JAX_PLATFORMS", "cuda")
  with pytest.raises(ValueError, match="one accelerator"):
    SW.check_allowed(c, 2)


@two_cpus
def test_parallel_stages_train_what_stages_in_turn_train(tmp_path, config_file):
  together, in_turn = tmp_path / "together", tmp_path / "in_turn"
  proc = run_train(together, "--config.train.parallel_stages=2", devices=1, config=config_file)
  run_train(in_turn, devices=1, config=config_file)
  for name in STAGES:
    got, want = losses(together / "stages" / name), losses(in_turn / "stages" / name)
    assert sorted(got) == [1, 2, 3, 4]
    np.testing.assert_allclose([got[k] for k in sorted(got)], [want[k] for k in sorted(want)],
                               rtol=1e-5)
    log_text = (together / "stages" / name / SW.STAGE_LOG).read_text()
    assert "step" in log_text and not (in_turn / "stages" / name / SW.STAGE_LOG).exists()
    assert f"stage {name} finished in" in proc.stderr
  assert proc.stderr.count("worker on CPUs") == 2
  # the main run takes both, in name order whatever order they finished in
  first = proc.stderr.index(f"from {together / 'stages' / 'a_first' / 'checkpoints' / '4'}")
  second = proc.stderr.index(f"from {together / 'stages' / 'b_second' / 'checkpoints' / '4'}")
  assert first < second
  assert sorted(losses(together)) == [1, 2]
  again = run_train(together, "--config.train.parallel_stages=2", devices=1, config=config_file)
  assert "worker on CPUs" not in again.stderr and "stage a_first already finished" in again.stderr


@two_cpus
def test_a_parallel_stage_waits_for_the_stage_it_starts_from(tmp_path, config_file):
  run = tmp_path / "run"
  proc = run_train(run, "--config.train.parallel_stages=2",
                   "--config.stages.b_second.checkpoint.init_from_stages=a_first",
                   devices=1, config=config_file)
  first = run / "stages" / "a_first" / "checkpoints" / "4"
  assert f"from {first}" in (run / "stages" / "b_second" / SW.STAGE_LOG).read_text()
  assert proc.stderr.index("stage a_first finished in") < proc.stderr.index("stage b_second (")
  assert sorted(losses(run / "stages" / "b_second")) == [1, 2, 3, 4]


@two_cpus
def test_sigterm_stops_every_stage_with_a_checkpoint(tmp_path, config_file):
  run = tmp_path / "run"
  proc = start_train(run, "--config.train.parallel_stages=2",
                     "--config.stages.a_first.train.steps=1000",
                     "--config.stages.b_second.train.steps=1000",
                     "--config.stages.a_first.debug.sleep_per_step=0.3",
                     "--config.stages.b_second.debug.sleep_per_step=0.3",
                     devices=1, config=config_file, log_path=tmp_path / "log.txt")
  rc = sigterm_when_ready(proc, lambda: all(len(losses(run / "stages" / n)) >= 2 for n in STAGES),
                          tmp_path / "log.txt", start_timeout=240, stop_timeout=180)
  assert rc == 0, (tmp_path / "log.txt").read_text()[-3000:]
  for name in STAGES:
    summary = json.loads((run / "stages" / name / "summary.json").read_text())
    assert summary["preempted"] and summary["final_step"] < 1000, summary
    assert (run / "stages" / name / "checkpoints" / str(summary["final_step"])).is_dir()
  assert not (run / "checkpoints").exists()  # the main run never started
