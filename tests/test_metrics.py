"""Continual-learning metrics on hand-computed accuracy matrices (rows: stages, cols: tasks)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from comet_model.eval.metrics import (
    average_accuracy,
    average_forgetting,
    backward_transfer,
    forgetting,
    forward_transfer,
)

NAN = float("nan")

# Scores only fall after a task's own stage, so BWT = -average forgetting here.
DECAY = np.array(
    [
        [80.0, NAN, NAN],
        [70.0, 60.0, NAN],
        [75.0, 50.0, 90.0],
    ]
)
# Task 0 peaks after stage 1 (not its own stage) and task 1 improves later: BWT != -forgetting.
RISE = np.array(
    [
        [50.0, NAN],
        [80.0, 40.0],
        [60.0, 70.0],
    ]
)


def test_forgetting_hand_values_and_sign() -> None:
    # task 0: max(80, 70) - 75 = 5; task 1: 60 - 50 = 10; task 2 has no earlier stage.
    np.testing.assert_allclose(forgetting(DECAY), [5.0, 10.0, NAN])
    # task 0: max(50, 80) - 60 = 20 (forgot); task 1: 40 - 70 = -30 (improved).
    np.testing.assert_allclose(forgetting(RISE), [20.0, -30.0])
    assert average_forgetting(DECAY) == pytest.approx(7.5)
    assert average_forgetting(RISE) == pytest.approx(-5.0)


def test_backward_transfer_hand_values() -> None:
    # ((75 - 80) + (50 - 60)) / 2
    assert backward_transfer(DECAY) == pytest.approx(-7.5)
    assert backward_transfer(DECAY) == pytest.approx(-average_forgetting(DECAY))
    # ((60 - 50) + (70 - 40)) / 2 = 20, while -average forgetting is 5.
    assert backward_transfer(RISE) == pytest.approx(20.0)
    assert backward_transfer(RISE) != pytest.approx(-average_forgetting(RISE))


def test_no_change_means_zero_forgetting_and_bwt() -> None:
    acc = np.array([[60.0, NAN], [60.0, 30.0], [60.0, 30.0]])
    np.testing.assert_allclose(forgetting(acc), [0.0, 0.0])
    assert backward_transfer(acc) == 0.0


def test_average_accuracy_skips_nan() -> None:
    assert average_accuracy(DECAY) == pytest.approx((75 + 50 + 90) / 3)
    assert average_accuracy(np.array([[1.0, 2.0], [60.0, NAN]])) == pytest.approx(60.0)
    assert math.isnan(average_accuracy(np.array([[1.0, 2.0], [NAN, NAN]])))


def test_forward_transfer_hand_values() -> None:
    acc = np.array([[80.0, 20.0, 10.0], [70.0, 60.0, 30.0], [75.0, 50.0, 90.0]])
    base = np.array([0.0, 10.0, 10.0])
    # k = 1: 20 - 10; k = 2: 30 - 10
    assert forward_transfer(acc, base) == pytest.approx(15.0)
    acc[0, 1] = NAN
    assert forward_transfer(acc, base) == pytest.approx(20.0)
    with pytest.raises(ValueError):
        forward_transfer(acc, base[:2])


def test_fewer_stages_than_tasks() -> None:
    acc = np.array([[80.0, NAN, 5.0], [70.0, 60.0, 15.0]])
    np.testing.assert_allclose(forgetting(acc), [10.0, NAN, -10.0])
    assert backward_transfer(acc) == pytest.approx(-10.0)
    assert average_accuracy(acc) == pytest.approx((70 + 60 + 15) / 3)
    assert forward_transfer(acc, np.zeros(3)) == pytest.approx(15.0)  # acc[0, 1] is NaN


def test_single_stage_and_bad_shapes() -> None:
    one = np.array([[50.0, NAN]])
    assert np.isnan(forgetting(one)).all()
    assert math.isnan(backward_transfer(one))
    assert average_accuracy(one) == 50.0
    with pytest.raises(ValueError):
        forgetting(np.array([1.0, 2.0]))
