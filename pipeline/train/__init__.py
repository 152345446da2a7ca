"""Training: the Accelerate loop, checkpoints, optimizer."""
