"""vitron_jax."""
