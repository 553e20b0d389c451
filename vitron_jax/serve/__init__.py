"""Serving a trained VITRON: the chat session (`Vitron.load(workdir).chat(...)`) and CLI."""
from vitron_jax.serve.session import Reply, Vitron, latest_step_dir

__all__ = ["Vitron", "Reply", "latest_step_dir"]
