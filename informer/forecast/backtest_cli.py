"""The backtest command: ``key=value`` options -> long-format CSV, metrics JSON and PNG in one folder.

Plain ``key=value`` words like the forecast command (:mod:`informer.forecast.cli` says why not Hydra);
the rest of informer is imported inside :func:`run_backtest_command`, so ``--help`` and a mistyped
path answer without loading torch.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from informer.errors import UserError
from informer.forecast.cli import _refuse_existing, _write, origin_label, read_options

HELP = """\
usage: python scripts/backtest.py checkpoint=<best.pt> start=<timestamp> [end=<timestamp>] [stride=<steps>]
                                  [input=<csv>] [output=<dir>] [intervals=0.8,0.95] [batch_size=256]
                                  [overwrite=true] [device=cpu|cuda]

Rolling-origin backtest: forecast from every stride-th row between start and end with a trained
checkpoint alone (its training scaler, never refitted), and score every forecast against the data.

options:
  checkpoint=PATH   best.pt or last.pt of a training run (required).
  start=TIMESTAMP   the first origin (the last row a forecast reads): the first row at or after it. It needs
                    seq_len rows of history up to and including it (required).
  end=TIMESTAMP     the last origin: the last row at or before it. Default: the last row that still has
                    pred_len rows after it. Origins whose horizon runs past the data are forecast (truth
                    empty) but not scored.
  stride=STEPS      rows between consecutive origins (default 1: every row).
  input=PATH        CSV with the model's columns (as for scripts/forecast.py). Default: the training CSV
                    recorded in the checkpoint. The rows the forecasts read must be consecutive at the
                    trained frequency, without missing values. A model with known-future covariates
                    (dataset.known_future) reads their actual values of every forecast step from it, so
                    each origin's pred_len steps must lie in the data.
  output=DIR        folder for backtest.csv, metrics.json and backtest.png.
                    Default: backtest_<first origin>_<last origin> in the current directory.
  intervals=LEVELS  interval levels to report, among those the checkpoint is calibrated at
                    (default: all of them).
  batch_size=N      forecasts per model call (default 256).
  overwrite=BOOL    replace existing files in the output folder (default false).
  device=NAME       cpu (default) or cuda.

Outputs:
  backtest.csv      one row per origin, step and variable: origin, timestamp, step, variable, forecast,
                    lo80, hi80, lo95, hi95 (the calibrated intervals), q10 ... (quantile models), truth;
                    original units.
  metrics.json      over the scored origins: per-step MSE / MAE (scaled and original units) and skill,
                    per-step coverage of each interval, the same errors for naive_last and
                    naive_seasonal, and skill = 1 - MSE / naive_seasonal's MSE.
  backtest.png      MSE against the forecast step (model and both naive baselines) and coverage against
                    the step beside each nominal level.

Exit status: 0 on success, 2 for a problem with the inputs (the message says what to fix).
"""

OUTPUT_FILES = ("backtest.csv", "metrics.json", "backtest.png")


@dataclass
class BacktestOptions:
    checkpoint: str
    start: str
    end: str | None = None
    stride: str = "1"
    input: str | None = None
    output: str | None = None
    intervals: str | None = None
    batch_size: str = "256"
    overwrite: bool = False
    device: str = "cpu"


def parse_backtest_options(argv: list[str]) -> BacktestOptions:
    required = {"checkpoint": "<path of best.pt or last.pt>", "start": "<timestamp>"}
    return BacktestOptions(**read_options(argv, BacktestOptions, required))


def parse_levels(text: str | None) -> list[float] | None:
    """``"0.8,0.95"`` or ``"[0.8, 0.95]"`` -> [0.8, 0.95]; None -> None (every calibrated level)."""
    if text is None:
        return None
    words = [w.strip() for w in text.strip().strip("[]").split(",") if w.strip()]
    try:
        return [float(w) for w in words]
    except ValueError:
        raise UserError(f"intervals={text!r} must be numbers strictly between 0 and 1, e.g. "
                        "intervals=0.8,0.95") from None


def _positive_int(name: str, text: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise UserError(f"{name}={text!r} must be a whole number >= 1") from None
    if value <= 0:
        raise UserError(f"{name}={value} must be >= 1")
    return value


def run_backtest_command(opts: BacktestOptions) -> Path:
    """The whole command; returns the output folder. Raises UserError for bad input."""
    from informer.forecast.backtest import parse_stride

    stride = parse_stride(opts.stride)  # cheap checks first, before the checkpoint is loaded
    batch_size = _positive_int("batch_size", opts.batch_size)
    levels = parse_levels(opts.intervals)
    checkpoint = Path(opts.checkpoint)
    if not checkpoint.is_file():
        raise UserError(f"checkpoint {checkpoint} does not exist; pass the path of a best.pt or last.pt")

    from informer.forecast.api import Forecaster
    from informer.forecast.backtest import long_frame, run_backtest
    from informer.forecast.plot import render_backtest_png
    from informer.training.evaluate import json_safe

    fc = Forecaster.from_checkpoint(checkpoint, device=opts.device)
    source = Path(opts.input) if opts.input else fc.default_input()
    table = fc.table(source)
    for note in table.notes:
        print(f"note: {note}", flush=True)
    result = run_backtest(fc, table, opts.start, opts.end, stride, batch_size, levels)
    first, last = result.origins[0], result.origins[-1]
    folder = Path(opts.output) if opts.output else Path(
        f"backtest_{origin_label(first, fc.freq)}_{origin_label(last, fc.freq)}")
    paths = [folder / name for name in OUTPUT_FILES]
    for path, what in zip(paths, ("CSV", "metrics", "plot"), strict=True):
        _refuse_existing(path, opts.overwrite, what)
        if path.resolve() == source.resolve():
            raise UserError(f"{what} path {path} is the input file; choose another output=")

    import json

    metrics = {"checkpoint": str(checkpoint), "input": str(source), **result.metrics}
    csv = long_frame(result).to_csv(index=False, float_format="%.10g").encode()
    title = (f"backtest of {checkpoint.name}: {metrics['origins']} origins {first} to {last}, "
             f"stride {stride}")
    image = render_backtest_png(metrics, title)
    _write(paths[0], csv, opts.overwrite)
    _write(paths[1], (json.dumps(json_safe(metrics), indent=2) + "\n").encode(), opts.overwrite)
    _write(paths[2], image, opts.overwrite)
    model, naive = metrics["model"]["scaled"], metrics["naive_seasonal"]["scaled"]
    print(f"backtest: {metrics['origins']} origins from {first} to {last} (stride {stride}), "
          f"{metrics['windows']} scored; mse {model['mse']:.4g} (naive_seasonal {naive['mse']:.4g}, "
          f"skill {metrics['skill']:.3f})")
    for key, values in metrics["model"].get("intervals", {}).items():
        print(f"  {float(key):.0%} interval: coverage {values['coverage']:.3f}, "
              f"mean width {values['width']:.4g}")
    for path in paths:
        print(f"wrote {path}")
    # after the work, so that an error stays the only line of a failed run
    if fc.calibration_note is not None:  # points only, and how to add intervals
        print(f"note: {fc.calibration_note}", file=sys.stderr, flush=True)
    return folder
