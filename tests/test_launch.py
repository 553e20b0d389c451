"""Sweeps and launchers: expansion, the local launcher really running a sweep, and the exact
commands of the TPU-pod and SLURM launchers (dry runs)."""
import json
import shlex
import subprocess
import sys

import pytest

from train_runs import ROOT, child_env, losses
from vitron_jax.train import sweep as SW

SPEC = str(ROOT / "experiments" / "lm_synthetic.py")


def test_sweep_expansion_and_flags():
  runs = SW.sweep_runs(SPEC)
  assert [n for n, _ in runs] == ["lr=0.001_accum_steps=1", "lr=0.001_accum_steps=2",
                                  "lr=0.003_accum_steps=1", "lr=0.003_accum_steps=2"]
  assert SW.override_flags(runs[1][1]) == ["--config.optim.lr=0.001",
                                           "--config.train.accum_steps=2"]
  assert SW.format_value(("^a/", "b")) == "('^a/','b')"
  assert SW.format_value(True) == "True"
  assert SW.sweep_overrides(str(ROOT / "experiments" / "llava_lm.py")) == [{}]


def test_sweep_naming_a_missing_field_is_an_error(tmp_path):
  cfg = tmp_path / "bad.py"
  cfg.write_text("from vitron_jax.train.defaults import base_config\n"
                 "def get_config(arg=''):\n  return base_config()\n"
                 "def get_sweep(arg=''):\n  return [{'optim.lrr': 1.0}]\n")
  with pytest.raises(ValueError, match="'optim.lrr' names no config field"):
    SW.sweep_overrides(str(cfg))


def _launch(script, *args, timeout=60):
  return subprocess.run([sys.executable, str(ROOT / "launch" / script), *args], cwd=ROOT,
                        env=child_env(8), capture_output=True, text=True, timeout=timeout)


def test_local_launcher_runs_the_sweep_in_turn(tmp_path):
  proc = _launch("local.py", f"--config={SPEC}:test", f"--workdir={tmp_path}", "--sweep",
                 "--", "--config.checkpoint.every_steps=0", "--config.train.eval_at_end=True",
                 timeout=400)
  assert proc.returncode == 0, proc.stderr[-3000:]
  results = json.loads((tmp_path / "launch_local.json").read_text())
  assert [r["run"] for r in results] == ["lr=0.001_steps=2", "lr=0.003_steps=2"]
  assert all(r["returncode"] == 0 for r in results)
  for name in ("lr=0.001_steps=2", "lr=0.003_steps=2"):
    assert sorted(losses(tmp_path / name)) == [1, 2]
  lr = [json.loads(l)["lr"] for l in (tmp_path / "lr=0.003_steps=2" / "metrics.jsonl")
        .read_text().splitlines() if '"train"' in l]
  assert lr[1] == pytest.approx(0.003 * 0.5)  # warmup of 2 steps to the overridden lr
  report = (tmp_path / "sweep_report.md").read_text()
  for name in ("lr=0.001_steps=2", "lr=0.003_steps=2"):
    acc = json.loads((tmp_path / name / "summary.json").read_text())["eval"][
        "next_token_accuracy"]
    row = next(x for x in report.splitlines() if x.startswith(f"| {name} |"))
    assert f"{acc:.3f}" in row and "optim.lr=" in row


def test_sweep_report_rows_for_vitron_ablations(tmp_path):
  from vitron_jax.eval.sweep_report import write_sweep_report
  runs = SW.sweep_runs(str(ROOT / "experiments" / "pixelworld.py"))
  assert [r for _, r in runs] == [{"model.head.routing": m} for m in (
      "text", "embedding", "hybrid", "superlink")] + [{"model.synergy.mode": "off"}]
  for i, (name, _) in enumerate(runs[:-1]):  # the last run "failed": no summary
    (tmp_path / name).mkdir()
    (tmp_path / name / "summary.json").write_text(json.dumps({"eval": {
        "ref_seg/primary": 0.5 + i / 10, "ref_seg/chance": 0.125, "ref_box/primary": 0.25,
        "ref_box/chance": 0.05, "eval_seconds": 3.0}}))
  path = write_sweep_report(str(tmp_path), runs)
  assert path == str(tmp_path / "sweep_report.md")
  text = (tmp_path / "sweep_report.md").read_text()
  lines = text.splitlines()
  assert lines[2] == "| run | overrides | ref_box | ref_seg |"
  assert lines[4] == "| chance | | 0.050 | 0.125 |"
  assert lines[5] == "| routing=text | model.head.routing=text | 0.250 | 0.500 |"
  assert lines[8].endswith("| 0.250 | 0.800 |")
  assert lines[9] == "| mode=off | model.synergy.mode=off | no summary | no summary |"


def test_tpu_pod_launcher_command():
  proc = _launch("tpu_pod.py", "--tpu=pod-1", "--zone=us-east5-a", "--project=proj",
                 f"--config={SPEC}", "--workdir=gs://b/runs/x", "--sweep", "--setup",
                 "--dry_run", "--", "--config.train.steps=50")
  assert proc.returncode == 0, proc.stderr[-2000:]
  lines = proc.stdout.strip().splitlines()
  assert len(lines) == 5 and lines[0].startswith("[setup] gcloud compute tpus tpu-vm ssh pod-1")
  cmd = shlex.split(lines[2].split("] ", 1)[1])
  assert cmd[:9] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "pod-1",
                     "--zone=us-east5-a", "--worker=all", "--project=proj"]
  remote = cmd[9][len("--command="):]
  assert remote.startswith("cd ~/vitron_jax && VITRON_MULTIHOST=1 ")
  argv = shlex.split(remote.split(" && ", 1)[1])
  assert argv[argv.index("-m") + 1] == "vitron_jax.train.main"
  assert f"--config={SPEC}" in argv and "--workdir=gs://b/runs/x/lr=0.001_accum_steps=2" in argv
  assert argv[-3:] == ["--config.optim.lr=0.001", "--config.train.accum_steps=2",
                       "--config.train.steps=50"]


def test_slurm_launcher_script():
  proc = _launch("slurm.py", f"--config={SPEC}", "--workdir=/shared/x", "--nodes=4",
                 "--gpus_per_node=8", "--partition=gpu", "--sweep", "--dry_run")
  assert proc.returncode == 0, proc.stderr[-2000:]
  text = proc.stdout
  for line in ("#SBATCH --nodes=4", "#SBATCH --ntasks-per-node=1", "#SBATCH --gpus-per-node=8",
               "#SBATCH --partition=gpu", "#SBATCH --array=0-3", "export VITRON_MULTIHOST=1",
               'srun --kill-on-bad-exit=1 bash -c "$CMD"'):
    assert line in text, line
  # the array's entries parse back to the four runs' commands
  body = text[text.index("RUNS=(") + 6: text.index(")\nCMD=")]
  runs = [shlex.split(shlex.split(l)[0]) for l in body.strip().splitlines()]
  assert len(runs) == 4
  assert runs[3][-2:] == ["--config.optim.lr=0.003", "--config.train.accum_steps=2"]
  assert "--workdir=/shared/x/lr=0.003_accum_steps=2" in runs[3]


CONFIGS = ["lm_synthetic.py", "lm_synthetic.py:test", "llava_lm.py", "llava_lm.py:tiny",
           "pixelworld.py", "pixelworld.py:quick"] + [
    f"{p}.py{a}" for p in ("phase1_1_alignment", "phase1_2_invocation",
                           "phase1_3_decoder_alignment", "phase2_grounding", "phase3_synergy")
    for a in ("", ":tiny")]


@pytest.mark.parametrize("spec", CONFIGS)
def test_every_experiment_config_loads_and_its_sweep_expands(spec):
  full = str(ROOT / "experiments" / spec)
  c = SW.load_config(full)
  assert c.task.name and c.train.steps > 0 and c.data.global_batch > 0
  runs = SW.sweep_runs(full)
  assert runs and len({n for n, _ in runs}) == len(runs)


def test_vitron_task_seam_is_named_until_it_exists():
  from vitron_jax.train.task import TaskError, build_task, known_tasks
  assert {"lm_synthetic", "lm_conversations", "vitron"} <= set(known_tasks())
  c = SW.load_config(str(ROOT / "experiments" / "pixelworld.py") + ":quick")
  try:
    build_task(c)
  except TaskError as e:
    assert "vitron_jax.train.vitron_task" in str(e)
