"""The report's date axes span the data's days, not matplotlib's default four years around a single day."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from modelyard.ops.report import series_plot


def day_span(rows: list[tuple[object, ...]]) -> tuple[float, list[str]]:
    figure = series_plot(rows, 1, 3, "cost per day by pool", "USD")
    axes = figure.axes[0]
    low, high = axes.get_xlim()
    figure.canvas.draw()
    labels = [t.get_text() for t in axes.get_xticklabels() if t.get_text()]
    return high - low, labels


def test_one_day_of_data_is_one_day_wide() -> None:
    span, labels = day_span([(date(2026, 3, 4), "slm", 10, 0.5), (date(2026, 3, 4), "frontier", 3, 1.25)])
    assert span == pytest.approx(1.0)
    assert labels == ["2026-03-04"]


def test_a_fortnight_keeps_its_days_and_few_ticks() -> None:
    start = date(2026, 3, 1)
    rows = [(start + timedelta(days=n), "slm", 10, 0.1 * n) for n in range(14)]
    span, labels = day_span(rows)
    assert span == pytest.approx(14.0)
    assert 2 <= len(labels) <= 8
    assert all(label.startswith("2026-03-") for label in labels)
