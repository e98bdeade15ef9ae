"""One list of sweep axes ties the config, the grids, the Optuna space, the records and reports."""

from __future__ import annotations

import pyarrow as pa
import pytest

from ablations.keys import AXIS_KEYS, axes_of
from comet_model.config import ExperimentConfig
from reports.schema import AXES as RECORD_COLUMNS
from search_spaces.axes import AXES, by_column, by_key
from search_spaces.grids import GRIDS, get_grid
from search_spaces.optuna_space import SEARCHED

ARROW = {"int": pa.int32(), "float": pa.float64(), "bool": pa.bool_(), "str": pa.string()}


def test_every_axis_is_a_config_key_of_its_kind() -> None:
    flat = ExperimentConfig().to_flat()
    for axis in AXES:
        assert axis.key in flat, axis
        value = flat[axis.key]
        expected = {"int": int, "float": float, "bool": bool, "str": (str, tuple)}[axis.kind]
        assert isinstance(value, expected), (axis, value)
    assert len(by_column()) == len(by_key()) == len(AXES)  # no column or key spelled twice


def test_records_carry_every_axis_as_a_typed_column() -> None:
    assert {a.column: a.key for a in AXES} == AXIS_KEYS
    for axis in AXES:
        assert ARROW[axis.kind] == RECORD_COLUMNS[axis.column], axis.column
    row = axes_of(ExperimentConfig().to_flat(), variant="full", preset="default")
    assert set(row) == set(RECORD_COLUMNS)  # a run's axes fill exactly the record columns


def test_the_optuna_space_searches_axes_on_their_scale() -> None:
    pytest.importorskip("ray")
    from search_spaces.optuna_space import comet_space

    space = comet_space()
    assert list(space) == [by_column()[c].key for c in SEARCHED]
    for column in SEARCHED:
        axis = by_column()[column]
        dist = space[axis.key]
        sampler = type(dist.get_sampler()).__name__ if hasattr(dist, "get_sampler") else ""
        if axis.scale == "log":
            assert "LogUniform" in sampler, (column, sampler)


@pytest.mark.parametrize("grid", sorted(GRIDS))
def test_grid_arm_labels_name_their_axis_values(grid: str) -> None:
    """A grid sweeping an axis labels each arm with that axis's prefix and value."""
    arms = get_grid(grid)
    keys = by_key()
    for label, overrides in arms.items():
        swept = [k for k in overrides if k in keys and keys[k].curve]
        for key in swept:
            axis = keys[key]
            if len({str(a.get(key)) for a in arms.values()}) > 1:  # the grid varies this axis
                assert axis.arm(overrides[key]) in label.split(","), (grid, label, key)
