"""Convert stage: checkpoints and adapters → plans."""
