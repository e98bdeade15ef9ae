"""Downstream evaluations of a frozen model and the continual-learning metrics."""
