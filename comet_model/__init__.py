"""COMET: continual cross-modal generalization (reference implementation)."""
