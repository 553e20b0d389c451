"""Helpers for the trainer's subprocess tests: run `python -m vitron_jax.train.main` on the
tiny LM config with fake CPU devices, read its metrics."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "experiments" / "lm_synthetic.py") + ":test"


def child_env(devices: int = 8, cache_dir: str | os.PathLike | None = None) -> dict[str, str]:
  env = dict(os.environ)
  env.update(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
             JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
  env.pop("VITRON_MULTIHOST", None)
  if cache_dir is not None:  # share compiled steps between the runs of one test
    env.update(JAX_COMPILATION_CACHE_DIR=str(cache_dir),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
  return env


def command(workdir, *overrides: str, config: str = CONFIG) -> list[str]:
  return [sys.executable, "-m", "vitron_jax.train.main", f"--config={config}",
          f"--workdir={workdir}", *overrides]


def run_train(workdir, *overrides: str, devices: int = 8, cache_dir=None, timeout: int = 240,
              check: bool = True, config: str = CONFIG) -> subprocess.CompletedProcess:
  proc = subprocess.run(command(workdir, *overrides, config=config), cwd=ROOT,
                        env=child_env(devices, cache_dir), capture_output=True, text=True,
                        timeout=timeout, check=False)
  if check and proc.returncode != 0:
    raise AssertionError(f"training run failed (rc={proc.returncode}):\n{proc.stderr[-4000:]}")
  return proc


def start_train(workdir, *overrides: str, devices: int = 8, cache_dir=None, log_path=None,
                extra_env=None, config: str = CONFIG) -> subprocess.Popen:
  env = child_env(devices, cache_dir)
  env.update(extra_env or {})
  out = open(log_path, "w") if log_path else subprocess.DEVNULL  # noqa: SIM115
  return subprocess.Popen(command(workdir, *overrides, config=config), cwd=ROOT, env=env,
                          stdout=out, stderr=subprocess.STDOUT)


def sigterm_when_ready(proc: subprocess.Popen, ready, log_path, *, start_timeout: float,
                       stop_timeout: float) -> int:
  """Wait until `ready()` (the run is training), send SIGTERM and return the exit code; fail
  with the log's end if the run exits or stalls first; never leave the process behind."""
  try:
    deadline = time.monotonic() + start_timeout
    while not ready():
      assert proc.poll() is None, Path(log_path).read_text()[-3000:]
      assert time.monotonic() < deadline, "training did not start in time"
      time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=stop_timeout)
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait(timeout=30)


def records(workdir, kind: str | None = None) -> list[dict]:
  path = Path(workdir) / "metrics.jsonl"
  if not path.exists():
    return []
  rows = []
  for line in path.read_text().splitlines():
    try:
      rows.append(json.loads(line))
    except json.JSONDecodeError:
      continue
  return [r for r in rows if kind is None or r.get("kind") == kind]


def losses(workdir) -> dict[int, float]:
  return {r["step"]: r["loss"] for r in records(workdir, "train")}


def events(workdir, name: str) -> list[dict]:
  return [r for r in records(workdir, "event") if r.get("event") == name]


def checkpoint_steps(workdir) -> list[int]:
  d = Path(workdir) / "checkpoints"
  return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.exists() else []


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def load_config(arg: str = "test", path: str | os.PathLike | None = None):
  """The experiment config (default: the tiny LM's "test" variant), unlocked."""
  import importlib.util  # pylint: disable=import-outside-toplevel
  path = Path(path or ROOT / "experiments" / "lm_synthetic.py")
  spec = importlib.util.spec_from_file_location(f"_cfg_{path.stem}", path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config(arg)
