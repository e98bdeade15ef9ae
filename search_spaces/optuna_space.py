"""The Optuna search space: EWC lambda, K2 and the PMR weights (flat config keys)."""

from __future__ import annotations

from search_spaces.axes import by_column

#: The searched axes (results columns of :data:`search_spaces.axes.AXES`).
SEARCHED = ("ewc_lam", "k2", "w_k2", "beta_pmr")


def comet_space() -> dict[str, object]:
    """Ray Tune distributions over the COMET hyperparameters the paper leaves open."""
    from ray import tune

    axes = by_column()
    bounds = {"ewc_lam": (0.1, 1e4), "w_k2": (0.05, 1.0), "beta_pmr": (0.05, 2.0)}
    space: dict[str, object] = {axes["k2"].key: tune.choice([0, 16, 32, 64, 128])}
    for column, (lo, hi) in bounds.items():
        ax = axes[column]
        space[ax.key] = tune.loguniform(lo, hi) if ax.scale == "log" else tune.uniform(lo, hi)
    return {key: space[key] for key in (axes[c].key for c in SEARCHED)}
