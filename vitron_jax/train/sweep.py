"""Sweeps: a config file's list of overrides -> one `vitron-train` command per run.

A config file may define `get_sweep(arg)` (or `sweep()`), returning a list of dicts
``{"dotted.config.path": value}``; each dict is one run. The launchers (`launch/*.py`) turn a
run into command-line flags (`--config.optim.lr=0.001`) and a workdir named after it.

    runs = sweep_runs("experiments/lm_synthetic.py")        # [(name, {path: value}), ...]
    argv = train_argv("experiments/lm_synthetic.py", "/runs/x/" + name, overrides)
"""
from __future__ import annotations

import importlib.util
import os
import re
import sys
from typing import Any, Mapping, Sequence


def split_config_arg(spec: str) -> tuple[str, str]:
  """``"experiments/x.py:arg"`` -> (path, arg)."""
  path, _, arg = spec.partition(":")
  return path, arg


def load_config_module(path: str):
  if not os.path.isfile(path):
    raise FileNotFoundError(f"config file {path} does not exist")
  name = "_vitron_cfg_" + re.sub(r"\W", "_", os.path.abspath(path))
  spec = importlib.util.spec_from_file_location(name, path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def load_config(spec: str):
  """The ConfigDict of ``path[:arg]`` (what `--config=` loads)."""
  path, arg = split_config_arg(spec)
  mod = load_config_module(path)
  return mod.get_config(arg) if arg else mod.get_config()


def sweep_overrides(spec: str) -> list[dict[str, Any]]:
  """The config file's sweep (`get_sweep(arg)` or `sweep()`), checked; [{}] if none."""
  path, arg = split_config_arg(spec)
  mod = load_config_module(path)
  if hasattr(mod, "get_sweep"):
    runs = mod.get_sweep(arg)
  elif hasattr(mod, "sweep"):
    runs = mod.sweep()
  else:
    return [{}]
  if not isinstance(runs, list) or not runs or not all(isinstance(r, Mapping) for r in runs):
    raise ValueError(f"{path}: the sweep must be a non-empty list of dicts of overrides, got "
                     f"{runs!r}")
  config = load_config(spec)
  for r in runs:
    for key in r:
      _check_path(config, key, path)
  return [dict(r) for r in runs]


def _check_path(config, key: str, where: str) -> None:
  node = config
  for part in key.split("."):
    try:
      node = node[part]
    except (KeyError, TypeError, AttributeError) as e:
      raise ValueError(f"{where}: sweep override {key!r} names no config field") from e


def format_value(v: Any) -> str:
  """A value as `config_flags` parses it on the command line."""
  if isinstance(v, bool):
    return "True" if v else "False"
  if isinstance(v, (list, tuple)):
    return "(" + ",".join(format_value(x) if not isinstance(x, str) else repr(x)
                          for x in v) + ("," if len(v) == 1 else "") + ")"
  return str(v)


def override_flags(overrides: Mapping[str, Any]) -> list[str]:
  return [f"--config.{k}={format_value(v)}" for k, v in overrides.items()]


def run_name(overrides: Mapping[str, Any]) -> str:
  """A folder-safe name: ``lr=0.001_accum_steps=2`` (last path component of each key)."""
  if not overrides:
    return "run"
  parts = [f"{k.split('.')[-1]}={format_value(v)}" for k, v in overrides.items()]
  return re.sub(r"[^A-Za-z0-9=._,+-]", "", "_".join(parts))[:200]


def sweep_runs(spec: str) -> list[tuple[str, dict[str, Any]]]:
  runs = sweep_overrides(spec)
  names = [run_name(r) for r in runs]
  if len(set(names)) != len(names):
    names = [f"{i:03d}_{n}" for i, n in enumerate(names)]
  return list(zip(names, runs))


def train_argv(spec: str, workdir: str, overrides: Mapping[str, Any] = (),
               extra: Sequence[str] = (), python: str | None = None) -> list[str]:
  """The command line of one run."""
  return [python or sys.executable, "-m", "vitron_jax.train.main", f"--config={spec}",
          f"--workdir={workdir}", *override_flags(dict(overrides)), *extra]
