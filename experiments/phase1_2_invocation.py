"""VITRON phase 1.2 (DESIGN.md §5). Invocation-oriented instruction tuning: LM loss on answers and invocation text.

    vitron-train --config=experiments/phase1_2_invocation.py --workdir=/runs/phase1_2_invocation \
        --config.checkpoint.init_from=/runs/<previous phase>/checkpoints/<step>

Argument: "" = the paper's size (model, trainable parts and loss weights from
`experiments/vitron_7b.py`), "tiny" = the tiny model of `experiments/vitron_tiny.py` with the
same phase settings (smoke runs). Data: `phase_data.py` (PixelWorld by default; real LLaVA /
Vitron JSON folders through `--config.data.sources`).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import phase_data  # noqa: E402  (a sibling file; config files are loaded by path)

PHASE = "1.2"


def get_config(arg: str = ""):
  return phase_data.phase_config(PHASE, arg)


def get_sweep(arg: str = ""):
  return phase_data.phase_sweep(PHASE, arg)
