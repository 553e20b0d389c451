"""Building blocks shared by every network in vitron_jax."""
from vitron_jax.nn.attention import dot_product_attention, padding_mask, causal_mask
from vitron_jax.nn.layers import Dense, Embed, DenseGeneral
from vitron_jax.nn.norms import RMSNorm, LayerNorm
from vitron_jax.nn.rope import RopeConfig, rope_frequencies, apply_rope
from vitron_jax.nn.mlp import GatedMLP, MLP

__all__ = [
    "dot_product_attention", "padding_mask", "causal_mask", "Dense", "Embed", "DenseGeneral",
    "RMSNorm", "LayerNorm", "RopeConfig", "rope_frequencies", "apply_rope", "GatedMLP", "MLP",
]
