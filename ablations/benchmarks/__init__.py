"""The benchmark sections behind ``python ablations/bench.py`` (one module per section)."""
