"""Tests for maskedit.limits: every setting's range, refused values named with their range, the README's table."""

import math
from pathlib import Path

import numpy as np
import pytest

from maskedit import limits
from maskedit.errors import MaskEditError
from maskedit.method.training import TrainConfig

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.parametrize("name", list(limits.LIMITS))
def test_every_limit_accepts_its_ends_and_refuses_beyond_them(name):
    limit = limits.LIMITS[name]
    low, high = limit.low, limit.high
    if limit.rule == "4k+1":
        low, high = 5, (high - 1) // 4 * 4 + 1
    elif limit.rule == "multiple of 16":
        low, high = 16, high // 16 * 16
    assert limits.check(name, low) == low
    assert limits.check(name, high) == high
    step = 1 if limit.integer else max(abs(high) * 1e-6, 1e-12)
    for bad in (low - step, high + step if limit.integer else high * 1.01 + step, math.nan, math.inf, -math.inf):
        with pytest.raises(MaskEditError) as caught:
            limits.check(name, bad)
        message = str(caught.value)
        assert limit.label in message and f"({name})" in message and "at least" in message and "at most" in message


def test_messages_name_the_setting_the_range_and_the_value():
    with pytest.raises(MaskEditError, match=r"the learning rate \(--lr\) is nan; it must be a finite number, "
                                            r"at least 1e-08 and at most 1$"):
        limits.check("learning_rate", float("nan"), "--lr")
    with pytest.raises(MaskEditError, match=r"seed \(seed\) is 1180591620717411303424;.* at most 9223372036854775807"):
        limits.check("seed", 2**70)
    with pytest.raises(MaskEditError, match=r"rank \(rank\) is 100000;"):
        limits.check("rank", 100_000)


def test_types_and_rules():
    assert limits.check("train_steps", np.int64(7)) == 7 and type(limits.check("train_steps", 7.0)) is int
    for name, bad in (("train_steps", 2.5), ("train_steps", "7"), ("train_steps", True), ("seed", None),
                      ("num_frames", 48), ("width", 830), ("window", 8), ("window", 1)):
        with pytest.raises(MaskEditError):
            limits.check(name, bad)
    assert limits.check("window", 0) == 0 and limits.check("window", 9) == 9
    assert type(limits.check("learning_rate", 1)) is float


def test_value_or_default_treats_only_none_as_the_default():
    assert limits.value_or_default("train_steps", None, 100) == 100
    assert limits.value_or_default("train_steps", 5, 100) == 5
    with pytest.raises(MaskEditError, match="at least 1"):  # 0 is a value, never "the preset's 100 steps"
        limits.value_or_default("train_steps", 0, 100)


def test_prompt_duplicates_and_points():
    assert limits.check_prompt("  a car ") == "a car"
    for bad in ("", "   ", None, 3):
        with pytest.raises(MaskEditError, match="is empty"):
            limits.check_prompt(bad)
    assert limits.check_unique_frames([4, 8]) == [4, 8]
    with pytest.raises(MaskEditError, match="4 is given twice"):
        limits.check_unique_frames([4, 8, 4])
    assert limits.check_points_count(limits.MAX_POINTS) == limits.MAX_POINTS
    with pytest.raises(MaskEditError, match="number of clicks"):
        limits.check_points_count(100_000)


def test_train_config_is_held_to_the_limits():
    for bad in (dict(steps=10**9), dict(learning_rate=float("nan")), dict(alpha=float("nan")), dict(rank=100_000),
                dict(seed=2**70), dict(seed=-1), dict(timestep_shift=float("inf")), dict(betas=(0.9, float("nan")))):
        with pytest.raises(MaskEditError) as caught:
            TrainConfig(**bad)
        assert "it must be" in str(caught.value)
    assert TrainConfig(steps=10_000, rank=256, seed=2**63 - 1).steps == 10_000


def test_the_readme_shows_the_table_of_ranges():
    assert limits.ranges_markdown() in README.read_text()
