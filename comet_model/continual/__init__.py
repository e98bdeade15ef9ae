"""The continual pipeline: the training loop, codebook expansion, EWC consolidation, checkpoints."""
