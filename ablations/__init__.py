"""The Ray Tune sweep harness for COMET (Ray is imported lazily, inside the sweep code)."""
