"""The portfolio as pictures: a PNG file (matplotlib) and a chart in the terminal
(uniplot), each showing, per currency, the allocation (outstanding principal by grade
and by borrower) and the cash flows expected per month. Both read ``portfolio.show``'s
answer only, so they show exactly the figures `p2pnode portfolio --json` gives.

matplotlib and uniplot are imported here, when a picture is asked for, never on the path
of any other command (the CLI starts fast)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable


def _major(minor: int, currency: str) -> float:
    from protocol.lending.money import exponent

    return minor / 10 ** exponent(currency)


def _series(view: dict[str, Any], label: Callable[[str], str]) -> list[tuple[str, list[tuple[str, float]]]]:
    """``(title, [(label, value)])`` of each chart, for each lender currency."""
    out = []
    for cur, v in view["lender"].items():
        out.append((f"{cur} outstanding by grade", [(g, _major(a, cur)) for g, a in v["by_grade"].items()]))
        out.append((f"{cur} outstanding by borrower", [(label(k), _major(a, cur)) for k, a in v["by_borrower"].items()]))
        out.append((f"{cur} expected cash flows by month", [(m, _major(a, cur)) for m, a in v["cash_flows"].items()]))
    for cur, v in view["borrower"].items():
        out.append((f"{cur} owed by month", [(m, _major(a, cur)) for m, a in v["by_month"].items()]))
    return [(t, s) for t, s in out if s]


def write_png(view: dict[str, Any], path: Path, label: Callable[[str], str] = lambda k: k[-8:]) -> int:
    """Draw every chart of ``view`` into the PNG file ``path``; how many charts."""
    import matplotlib

    matplotlib.use("Agg")  # a file, no display
    import matplotlib.pyplot as plt

    charts = _series(view, label)
    fig, axes = plt.subplots(max(1, len(charts)), 1, figsize=(8, 2.6 * max(1, len(charts))), squeeze=False)
    for ax, (title, points) in zip(axes[:, 0], charts):
        ax.bar([p[0] for p in points], [p[1] for p in points], color="#4477aa")
        ax.set_title(title, fontsize=10)
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    if not charts:
        axes[0, 0].text(0.5, 0.5, f"no loans as of {view['as_of']}", ha="center")
        axes[0, 0].set_axis_off()
    fig.suptitle(f"portfolio as of {view['as_of']}")
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    return len(charts)


def terminal_chart(view: dict[str, Any], label: Callable[[str], str] = lambda k: k[-8:], width: int = 60) -> str:
    """The same charts as text, for a terminal: each series plotted over its points 1, 2,
    3, ... (uniplot draws numbers on its axes), with what each point is listed below."""
    from uniplot import plot_to_string

    parts = []
    for title, points in _series(view, label):
        ys = [p[1] for p in points]
        chart = plot_to_string(ys, xs=list(range(1, len(ys) + 1)), title=title, lines=len(ys) > 1, width=width,
                               height=8, y_min=0)
        legend = "  ".join(f"{i}: {p[0]} {p[1]:,.2f}" for i, p in enumerate(points, 1))
        parts.append(f"{chart}\n{legend}\n")
    return "\n".join(parts) if parts else f"no loans as of {view['as_of']}"
