"""Weights in and out: Hugging Face / diffusers folders <-> Flax parameter trees.

Safetensors only; nothing is ever unpickled.
"""
from vitron_jax.convert.safetensors_io import (WeightsError, read_weights, write_weights,
                                               find_weight_files)
from vitron_jax.convert.tree import WeightsMismatchError, check_keys
