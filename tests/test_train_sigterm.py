"""SIGTERM during training: a checkpoint is finished, exit status 0, and a resumed run
continues from it with the losses of an uninterrupted run."""

from train_runs import (checkpoint_steps, events, losses, run_train, sigterm_when_ready,
                        start_train)


def test_sigterm_saves_and_exits_zero_then_resume_continues(tmp_path):
  cache = tmp_path / "jax_cache"
  run = tmp_path / "run"
  # many steps, slowed down, so that the signal surely lands mid-training
  proc = start_train(run, "--config.train.steps=1000", "--config.checkpoint.every_steps=1000",
                     "--config.debug.sleep_per_step=0.3", cache_dir=cache,
                     log_path=tmp_path / "log.txt")
  rc = sigterm_when_ready(proc, lambda: len(losses(run)) >= 2, tmp_path / "log.txt",
                          start_timeout=180, stop_timeout=120)
  assert rc == 0, (tmp_path / "log.txt").read_text()[-3000:]
  stopped = max(losses(run))
  assert stopped < 1000
  assert checkpoint_steps(run) == [stopped]
  ev = events(run, "sigterm")
  assert len(ev) == 1 and ev[0]["step"] == stopped

  total = stopped + 2
  run_train(run, f"--config.train.steps={total}", cache_dir=cache)
  got = losses(run)
  assert events(run, "resumed")[0]["checkpoint"].endswith(f"/checkpoints/{stopped}")

  straight = tmp_path / "straight"
  run_train(straight, f"--config.train.steps={total}", cache_dir=cache)
  want = losses(straight)
  assert sorted(got) == sorted(want) == list(range(1, total + 1))
  for step in range(1, total + 1):
    assert got[step] == want[step], (step, got[step], want[step])
