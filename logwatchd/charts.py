"""The report's charts: PNG images drawn with matplotlib (the ``report`` extra), embedded in
the page as data URIs so it needs no network and no other file.

matplotlib's object API with the Agg canvas: no pyplot, no GUI backend, no global figure
state. Labels can come from log lines (a user name is a key): they are cut, stripped of
control characters, and never parsed as mathtext.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import logging
from typing import Any

MAX_SERIES = 8  # rules drawn one by one; the rest are summed as "other rules"
LABEL_CHARS = 40
DPI = 100
PALETTE = (
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
    "#8c564b", "#e377c2", "#17becf", "#7f7f7f",
)  # fmt: skip


class ChartsUnavailable(RuntimeError):
    pass


def _figure(width: float, height: float) -> Any:
    try:
        import matplotlib
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ChartsUnavailable(
            "the HTML report draws its charts with matplotlib, which is not installed here: "
            "pip install 'logwatchd[report]' (for the service's own environment: "
            "/opt/logwatchd/bin/pip install matplotlib), or use -o - for the text report"
        ) from exc
    matplotlib.rcParams["text.parse_math"] = False  # "$x$" in a user name is text
    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # its font cache notes
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _png(figure: Any) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def label(text: str) -> str:
    clean = "".join(ch if ch.isprintable() else "?" for ch in text)
    return clean if len(clean) <= LABEL_CHARS else clean[: LABEL_CHARS - 1] + "…"


def timeline(
    starts: list[int], series: dict[str, list[int]], width: int, title: str, order: list[str]
) -> str:
    """Stacked bars per rule over time. ``order`` ranks the rules (busiest first) and so
    gives each its colour in every chart; the first ``MAX_SERIES`` are drawn on their own,
    the rest summed."""
    figure = _figure(10, 3.6)
    axes = figure.subplots()
    ranked = [rule for rule in order if rule in series]
    colours = {rule: PALETTE[index] for index, rule in enumerate(order[:MAX_SERIES])}
    shown = [rule for rule in ranked if rule in colours]
    rest = [rule for rule in ranked if rule not in colours]
    if rest:
        summed = [sum(column) for column in zip(*(series[r] for r in rest), strict=True)]
        series = {**series, "other rules": summed}
        shown.append("other rules")
    times = [dt.datetime.fromtimestamp(start) for start in starts]
    bottom = [0] * len(starts)
    bar_width = dt.timedelta(seconds=width * 0.9)
    for rule in shown:
        axes.bar(
            times, series[rule], width=bar_width, bottom=bottom, align="edge",
            color=colours.get(rule, PALETTE[-1]), label=label(rule),
        )  # fmt: skip
        bottom = [a + b for a, b in zip(bottom, series[rule], strict=True)]
    _time_axis(axes, title, width)
    if times:
        axes.set_xlim(times[0], times[-1] + dt.timedelta(seconds=width))
    if shown:
        axes.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small", frameon=False)
    return _png(figure)


def _time_axis(axes: Any, title: str, width: int) -> None:
    import matplotlib.dates as mdates

    locator = mdates.AutoDateLocator()  # type: ignore[no-untyped-call]
    axes.xaxis.set_major_locator(locator)
    axes.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]
    axes.set_title(title, loc="left", fontsize="medium")
    axes.set_ylabel(f"per {_span(width)}")
    axes.spines[["top", "right"]].set_visible(False)


def top_bars(items: list[tuple[str, int]], title: str, color: str = PALETTE[0]) -> str:
    """Horizontal bars, largest on top."""
    figure = _figure(6, 0.45 * max(len(items), 1) + 1.0)
    axes = figure.subplots()
    names = [label(name) for name, _ in reversed(items)]
    axes.barh(names, [count for _, count in reversed(items)], color=color)
    axes.set_title(title, loc="left", fontsize="medium")
    axes.spines[["top", "right"]].set_visible(False)
    return _png(figure)


def _span(seconds: int) -> str:
    if seconds % 86400 == 0:
        return "day" if seconds == 86400 else f"{seconds // 86400} days"
    if seconds % 3600 == 0:
        return "hour" if seconds == 3600 else f"{seconds // 3600} hours"
    return "minute" if seconds == 60 else f"{seconds // 60} minutes"
