"""Sweep grids and search spaces, keyed by flat config keys (see ``grids`` and ``optuna_space``)."""

from search_spaces.grids import GRIDS, check_keys, get_grid

__all__ = ["GRIDS", "check_keys", "get_grid"]
