"""The Optuna search space: EWC lambda, K2 and the PMR weights (flat config keys)."""

from __future__ import annotations


def comet_space() -> dict[str, object]:
    """Ray Tune distributions over the COMET hyperparameters the paper leaves open."""
    from ray import tune

    return {
        "ewc.lam": tune.loguniform(0.1, 1e4),
        "replay.k2": tune.choice([0, 16, 32, 64, 128]),
        "replay.w_k2": tune.uniform(0.05, 1.0),
        "replay.beta_pmr": tune.loguniform(0.05, 2.0),
    }
