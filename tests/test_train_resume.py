"""Exact resume: N steps straight == k steps, kill -9, resume to N (bitwise on CPU)."""
from train_runs import checkpoint_steps, events, losses, records, run_train

N = 10


def test_sigkill_then_resume_gives_identical_losses(tmp_path):
  cache = tmp_path / "jax_cache"
  straight = tmp_path / "straight"
  run_train(straight, f"--config.train.steps={N}", cache_dir=cache)
  want = losses(straight)
  assert sorted(want) == list(range(1, N + 1))
  assert want[N] < want[1]

  run = tmp_path / "killed"
  killed = run_train(run, f"--config.train.steps={N}", "--config.checkpoint.every_steps=4",
                     "--config.checkpoint.async_save=False",
                     "--config.debug.sigkill_after_step=6", cache_dir=cache, check=False)
  assert killed.returncode == -9, killed.stderr[-2000:]
  assert checkpoint_steps(run) == [4]
  assert max(losses(run)) == 6

  run_train(run, f"--config.train.steps={N}", "--config.checkpoint.every_steps=4",
            cache_dir=cache)
  resumed = events(run, "resumed")
  assert len(resumed) == 1 and resumed[0]["checkpoint"].endswith("/checkpoints/4")
  got = losses(run)
  assert sorted(got) == list(range(1, N + 1))
  # the log was cut back to the checkpoint: every step exactly once
  assert [r["step"] for r in records(run, "train")] == list(range(1, N + 1))
  for step in range(1, N + 1):  # bitwise: JSON floats round-trip exactly
    assert got[step] == want[step], (step, got[step], want[step])
  assert checkpoint_steps(run)[-1] == N
