"""PNG of a forecast: recent history, the forecast and (for a backtest) the truth, one panel per variable."""

from __future__ import annotations

import io

import pandas as pd

from informer.forecast import TRUE_SUFFIX, ForecastResult

MAX_PANELS = 8


def render_forecast_png(result: ForecastResult, title: str, max_panels: int = MAX_PANELS
                        ) -> tuple[bytes, str | None]:
    """The figure as PNG bytes, plus a note when variables were left out to keep it readable."""
    import matplotlib

    matplotlib.use("Agg")  # files only: never needs a display
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    names = list(result.history.columns)
    shown = names
    note = None
    if len(names) > max_panels:
        # the target is always the last forecast variable and always worth a panel
        shown = [*names[: max_panels - 1], names[-1]]
        note = (f"plot shows {len(shown)} of {len(names)} forecast variables: the first {max_panels - 1} "
                f"and the target {names[-1]}")
        title = f"{title} ({len(shown)} of {len(names)} variables shown)"
    fig, axes = plt.subplots(len(shown), 1, figsize=(10, 1.0 + 2.0 * len(shown)), sharex=True, squeeze=False)
    frame = result.frame
    for ax, name in zip(axes[:, 0], shown, strict=True):
        ax.plot(result.history.index, result.history[name], color="0.35", lw=1.2, label="history")
        # Join the forecast to the last known point so the two lines read as one series.
        joined = pd.concat([result.history[name].iloc[-1:], frame[name]])
        ax.plot(joined.index, joined.to_numpy(), color="tab:blue", lw=1.6, label="forecast")
        truth = f"{name}{TRUE_SUFFIX}"
        if truth in frame.columns:
            ax.plot(frame.index, frame[truth], color="tab:orange", lw=1.2, ls="--", label="truth")
        ax.axvline(result.origin, color="0.6", lw=0.8, ls=":")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(loc="upper left", fontsize=8, ncol=3)
    locator = mdates.AutoDateLocator()
    axes[-1, 0].xaxis.set_major_locator(locator)
    axes[-1, 0].xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    axes[-1, 0].set_xlabel(result.history.index.name or "time")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue(), note
