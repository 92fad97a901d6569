"""`modelyard report --out report.html`: one self-contained HTML page (PNG plots embedded as base64).

* per task, the cost/quality frontier of an eval run: cost per 1,000 items against accuracy for each pool,
  the pool `policy recommend` would choose at the target marked, and the pools that no other pool beats on
  both cost and accuracy joined by a line;
* cost by pool and day (table and chart) from the daily rollup;
* shadow agreement over time per task (v_shadow_agreement) against the alert threshold;
* the registered students (model_registry).
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Sequence
from datetime import UTC, date, datetime

from modelyard.ops.policy_advisor import PoolQuality, choose_pools, latest_run, load_quality
from workers.sink.clickhouse import ClickHouseStore

COST_SQL = """
SELECT day, pool, sum(attempts) AS attempts, sum(cost_usd) AS cost_usd FROM v_cost_by_day
WHERE day >= toDate({since:DateTime64(3, 'UTC')}) GROUP BY day, pool ORDER BY day, pool
"""
SHADOW_SQL = """
SELECT day, task_type, pairs, agreement FROM v_shadow_agreement
WHERE day >= toDate({since:DateTime64(3, 'UTC')}) ORDER BY day, task_type
"""
REGISTRY_SQL = """
SELECT task, version, trained_on, heldout_examples, heldout_agreement, target, registered_at
FROM model_registry FINAL ORDER BY task, registered_at
"""
STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:1000px;color:#222}
table{border-collapse:collapse;margin:0.5rem 0 1.5rem}td,th{border:1px solid #ccc;padding:0.25rem 0.6rem;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}.note{color:#666}img{max-width:100%}
"""


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png(figure) -> str:
    """The figure as an <img> with the PNG inline (data: URI), then closed."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    _pyplot().close(figure)
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def table(names: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_text(v))}</td>" for v in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _text(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if hasattr(value, "quantize"):
        return f"{value:.6f}"
    return str(value)


def pareto(points: list[PoolQuality]) -> list[PoolQuality]:
    """Pools no other pool beats on both cost and accuracy, cheapest first."""
    ordered = sorted(points, key=lambda p: (p.cost_per_case, -p.accuracy))
    front: list[PoolQuality] = []
    for p in ordered:
        if not front or p.accuracy > front[-1].accuracy:
            front.append(p)
    return front


def frontier_plot(task: str, points: list[PoolQuality], recommended: PoolQuality, target: float):
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(7, 4.2))
    per_k = [float(p.cost_per_case) * 1000 for p in points]
    axes.scatter(per_k, [p.accuracy for p in points], s=60, zorder=3)
    for p, x in zip(points, per_k, strict=True):
        axes.annotate(
            f"{p.pool} ({p.model})",
            (x, p.accuracy),
            textcoords="offset points",
            xytext=(6, -12),
            fontsize="small",
        )
    front = pareto(points)
    axes.plot(
        [float(p.cost_per_case) * 1000 for p in front],
        [p.accuracy for p in front],
        "--",
        color="grey",
        zorder=2,
    )
    axes.scatter(
        [float(recommended.cost_per_case) * 1000],
        [recommended.accuracy],
        s=260,
        facecolors="none",
        edgecolors="red",
        linewidths=2,
        zorder=4,
        label=f"recommended: {recommended.pool}",
    )
    axes.axhline(target, color="red", linestyle=":", linewidth=1, label=f"target {target:g}")
    if all(x > 0 for x in per_k):
        axes.set_xscale("log")
    axes.set_xlabel("cost per 1,000 items (USD)")
    axes.set_ylabel("accuracy")
    axes.set_ylim(-0.02, 1.05)
    axes.margins(x=0.2)  # room for the labels of the outermost pools
    axes.set_title(f"{task}: cost / quality per pool")
    axes.legend(fontsize="small", loc="lower right")
    figure.tight_layout()
    return figure


def series_plot(
    rows: list[tuple[object, ...]],
    key: int,
    value: int,
    title: str,
    ylabel: str,
    threshold: float | None = None,
):
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(7, 3.6))
    for name in sorted({str(r[key]) for r in rows}):
        mine = [r for r in rows if str(r[key]) == name]
        axes.plot([r[0] for r in mine], [float(r[value]) for r in mine], marker="o", label=name)  # type: ignore[arg-type]
    if threshold is not None:
        axes.axhline(threshold, color="red", linestyle=":", linewidth=1, label=f"alert below {threshold:g}")
    if rows:
        fit_days(axes, [r[0] for r in rows])  # type: ignore[misc]
    axes.set_title(title)
    axes.set_ylabel(ylabel)
    axes.legend(fontsize="small")
    figure.autofmt_xdate()
    figure.tight_layout()
    return figure


def fit_days(axes, days: Sequence[date]) -> None:
    """The x axis spans the data's days, half a day either side, with whole days as ticks (at most ~8 of
    them). matplotlib's own limits widen a single day to four years."""
    import matplotlib.dates as mdates

    first, last = min(days), max(days)
    axes.set_xlim(mdates.date2num(first) - 0.5, mdates.date2num(last) + 0.5)
    span = (last - first).days + 1
    axes.xaxis.set_major_locator(mdates.DayLocator(interval=max(1, math.ceil(span / 8))))
    axes.xaxis.set_major_formatter(mdates.DateFormatter("%Y-%m-%d"))


class HtmlReport:
    def __init__(self, store: ClickHouseStore, target: float, alert_threshold: float = 0.9) -> None:
        self.store = store
        self.target = target
        self.alert_threshold = alert_threshold

    def render(self, run: str | None, since: datetime) -> str:
        run = run or latest_run(self.store)
        sections = [self.frontiers(run), self.costs(since), self.shadow(since), self.registry()]
        now = datetime.now(UTC)
        return (
            f"<!doctype html><html><head><meta charset='utf-8'><title>modelyard report</title><style>{STYLE}</style>"
            f"</head><body><h1>modelyard report</h1><p class='note'>generated {now:%Y-%m-%d %H:%M} UTC; eval run "
            f"{html.escape(run or '-')}; costs and agreement since {since:%Y-%m-%d}</p>{''.join(sections)}</body></html>"
        )

    def frontiers(self, run: str | None) -> str:
        out = ["<h2>Cost / quality frontier per task</h2>"]
        stats = load_quality(self.store, run) if run else []
        if not stats:
            return out[0] + "<p class='note'>No eval results yet: run <code>modelyard eval</code>.</p>"
        chosen = choose_pools(stats, self.target)
        for task, recommendation in chosen.items():
            points = [s for s in stats if s.task == task]
            out.append(
                f"<h3>{html.escape(task)}</h3>{png(frontier_plot(task, points, recommendation.quality, self.target))}"
            )
            rows = [
                (
                    p.pool,
                    p.model,
                    p.cases,
                    p.accuracy,
                    float(p.cost_per_case) * 1000,
                    "yes" if p is recommendation.quality else "",
                )
                for p in points
            ]
            out.append(table(["pool", "model", "cases", "accuracy", "USD per 1k items", "recommended"], rows))
            out.append(f"<p class='note'>{html.escape(recommendation.reason)}</p>")
        return "".join(out)

    def costs(self, since: datetime) -> str:
        rows = self.store.query(COST_SQL, {"since": since})
        if not rows:
            return "<h2>Cost by pool and day</h2><p class='note'>No costs in the window.</p>"
        plot = png(series_plot(rows, 1, 3, "cost per day by pool", "USD"))
        return "<h2>Cost by pool and day</h2>" + plot + table(["day", "pool", "attempts", "cost USD"], rows)

    def shadow(self, since: datetime) -> str:
        rows = self.store.query(SHADOW_SQL, {"since": since})
        if not rows:
            return "<h2>Shadow agreement</h2><p class='note'>No shadow pairs: set router.shadow_share.</p>"
        plot = png(
            series_plot(
                rows, 1, 3, "SLM / frontier agreement on shadow samples", "agreement", self.alert_threshold
            )
        )
        return (
            "<h2>Shadow agreement over time</h2>" + plot + table(["day", "task", "pairs", "agreement"], rows)
        )

    def registry(self) -> str:
        rows = self.store.query(REGISTRY_SQL)
        if not rows:
            return "<h2>Registered students</h2><p class='note'>None yet: <code>modelyard distill --task classification</code>.</p>"
        names = ["task", "version", "trained on", "held out", "held-out agreement", "target", "registered at"]
        return "<h2>Registered students</h2>" + table(names, rows)
