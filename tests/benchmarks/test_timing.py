"""The shared timing helper: warm-up then repeats, round-robin order, per-round ratios, the too-noisy verdict."""

from __future__ import annotations

import pytest

from benchmarks.timing import MAX_SPREAD, Samples, rate_row, ratio, ratio_row, time_call, time_calls, value_row


def test_warm_up_then_repeats_in_round_robin_order():
    calls: list[str] = []
    timed = time_calls({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=5, warmup=1)
    assert calls == ["a", "b"] * 6  # one warm-up round, then A B A B ...
    assert {k: len(v.values) for k, v in timed.items()} == {"a": 5, "b": 5}
    assert len(time_call(lambda: None).values) == 5
    with pytest.raises(ValueError):
        time_call(lambda: None, repeats=0)


def test_median_min_max_and_spread():
    s = Samples((1.0, 4.0, 2.0, 2.0, 3.0))
    assert (s.median, s.lo, s.hi, s.spread) == (2.0, 1.0, 4.0, 1.5)
    assert not s.readable and Samples((1.0, 1.1, 1.05, 1.0, 1.02)).readable
    assert 0 < MAX_SPREAD < 1


def test_ratio_is_per_round_so_a_slow_moment_hits_both_sides():
    # round 3 was slow for everything (a busy neighbour): the per-round ratio stays 2, the medians' ratio would too,
    # but the ratio's own spread shows the comparison is clean
    a, b = Samples((2.0, 2.0, 8.0, 2.0, 2.0)), Samples((1.0, 1.0, 4.0, 1.0, 1.0))
    r = ratio(a, b)
    assert r.values == (2.0,) * 5 and r.readable and not a.readable
    assert "too noisy" in rate_row("x/s", a, 10).verdict and ratio_row("a / b", r).verdict == "ok"
    with pytest.raises(ValueError):
        ratio(a, Samples((1.0,)))


def test_rate_rows_invert_the_slowest_and_fastest_repeat():
    row = rate_row("samples/s", Samples((0.5, 1.0, 2.0, 1.0, 1.0)), units_per_call=4)
    assert row.value == 4.0 and (row.samples.lo, row.samples.hi) == (2.0, 8.0)
    assert value_row("peak MB", 12.0).verdict == "single value"
