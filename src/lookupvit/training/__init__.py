"""Training: the run configuration, the engine (seeded multi-resolution training, exact resume, DDP), checkpoints and the run report."""
