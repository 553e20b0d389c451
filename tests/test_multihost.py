"""Two JAX processes on localhost (jax.distributed, 4 CPU devices each) train with the same
losses as one process with 8 devices and the same global batch; each process checkpoints its
own data-iterator state."""
import pytest

from train_runs import checkpoint_steps, free_port, losses, run_train, start_train

STEPS = 6


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
  single = tmp_path / "single"
  run_train(single, f"--config.train.steps={STEPS}", devices=8)
  want = losses(single)

  multi = tmp_path / "multi"
  port = free_port()
  procs = [start_train(multi, f"--config.train.steps={STEPS}",
                       "--config.distributed.enabled=True",
                       f"--config.distributed.coordinator_address=localhost:{port}",
                       "--config.distributed.num_processes=2",
                       f"--config.distributed.process_id={i}", devices=4,
                       log_path=tmp_path / f"log{i}.txt") for i in range(2)]
  try:
    rcs = [p.wait(timeout=300) for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait(timeout=30)
  logs = [(tmp_path / f"log{i}.txt").read_text()[-3000:] for i in range(2)]
  assert rcs == [0, 0], logs
  got = losses(multi)
  assert sorted(got) == sorted(want) == list(range(1, STEPS + 1))
  for s in want:  # cross-process all-reduce may sum in another order: not bitwise
    assert got[s] == pytest.approx(want[s], rel=1e-6, abs=1e-6), (s, got[s], want[s])
  assert checkpoint_steps(multi)[-1] == STEPS
  data = multi / "checkpoints" / str(STEPS) / "data"
  assert sorted(p.name for p in data.glob("*.json")) == ["process_0-of-2.json",
                                                         "process_1-of-2.json"]
