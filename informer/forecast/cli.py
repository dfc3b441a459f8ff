"""The forecast command: ``key=value`` options -> forecast CSV + PNG, refusing to clobber files.

Options are plain ``key=value`` words rather than Hydra overrides because the values are file paths
and timestamps: Hydra's grammar rejects a '=' inside a value, and Hydra's own multirun directories
(``.../model.attn=full/checkpoints/best.pt``) contain exactly that. The rest of informer is imported
inside the functions that need it, so ``--help`` and a mistyped path answer without loading torch.
"""

from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from informer.errors import UserError

if TYPE_CHECKING:
    import pandas as pd

HELP = """\
usage: python scripts/forecast.py checkpoint=<best.pt> [input=<csv>] [output=<csv>] [plot=<png>|none]
                                  [as_of=<timestamp>] [overwrite=true] [device=cpu|cuda]

Forecast the pred_len steps after a series ends, from a trained checkpoint alone (no retraining).

options:
  checkpoint=PATH   best.pt or last.pt of a training run (required). Loaded safely (weights only);
                    it holds the model, the training scaler, the columns, target, features and frequency.
  input=PATH        CSV to forecast from: the date column plus the columns the model was trained on (any
                    order; extra columns are ignored with a note), e.g. the training CSV with newer rows
                    appended. Default: the CSV the model was trained on (recorded in the checkpoint).
                    Its last seq_len rows (the look-back window) must be consecutive at the trained
                    frequency, without missing values.
                    A model trained with known-future covariates (dataset.known_future) also reads
                    those columns for the pred_len steps it forecasts: the CSV holds the history, then
                    pred_len future rows (timestamps continuing at the trained frequency, the
                    known-future columns filled, the target and past-covariate columns empty; later rows
                    are ignored). The forecast starts after the last row with every target and
                    past-covariate value; a value in those columns after it is refused (the origin
                    would be ambiguous).
  output=PATH       forecast CSV: one row per future timestamp, one column per forecast variable (the
                    target for features S/MS, every column for M) in the data's original units,
                    then <name>_lo80, <name>_hi80, <name>_lo95, <name>_hi95 ... (the calibrated
                    prediction intervals at the levels stored in the checkpoint) and, for a quantile
                    model, <name>_q10, <name>_q50, ... (its quantile forecasts).
                    Default: forecast_<origin>.csv in the current directory, where <origin> is the
                    timestamp of the last row the model read (e.g. forecast_2018-06-26T1900.csv).
                    A directory puts that default name inside it.
  plot=PATH|none    PNG of the recent history (3 x pred_len steps) and the forecast with its intervals
                    shaded as a fan, one panel per forecast variable (at most 8). Default: the output
                    path with .png; none: no plot.
  as_of=TIMESTAMP   forecast from inside the data: the window is the seq_len rows ending at this row
                    (inclusive). Where the data has the following rows, the CSV and the plot also get
                    <name>_true columns with them: a quick backtest. Known-future covariates of the
                    pred_len steps are read from the data. Default: the last row (with known-future
                    covariates: the last row before the future rows).
  overwrite=BOOL    replace existing output/plot files (default false: refuse before doing any work).
  device=NAME       cpu (default) or cuda.

Exit status: 0 on success, 2 for a problem with the inputs (the message says what to fix).
A checkpoint whose validation MSE was not better than seasonal naive's (recorded by training) gets a
one-line "note: ..." on stderr; the forecast is still written and the exit status is still 0. So does
a checkpoint without calibrated intervals (its forecast has point columns only).
Example:
  python scripts/forecast.py checkpoint=outputs/2024-01-01/12-00-00/checkpoints/best.pt \\
      input=data/ETT-small/ETTh1.csv as_of="2018-06-01 00:00:00"
"""

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}
_NO_PLOT = {"none", "null", "false", "no", "off", ""}


@dataclass
class ForecastOptions:
    checkpoint: str
    input: str | None = None
    output: str | None = None
    plot: str | None = None  # a path, or "none" for no plot
    as_of: str | None = None
    overwrite: bool = False
    device: str = "cpu"


def read_options(argv: list[str], option_class: type, required: dict[str, str]) -> dict[str, Any]:
    """``key=value`` arguments as keyword arguments of ``option_class`` (a dataclass with ``overwrite``
    and ``device`` fields); ``required`` maps each mandatory key to an example of its value."""
    names = [f.name for f in fields(option_class)]
    values: dict[str, Any] = {}
    for arg in argv:
        key, sep, value = arg.partition("=")
        key = key.strip().lstrip("-").replace("-", "_")
        if not sep:
            raise UserError(f"argument {arg!r} is not key=value; options: {', '.join(names)} (see --help)")
        if key not in names:
            raise UserError(f"unknown option {key!r}; options: {', '.join(names)} (see --help)")
        values[key] = value
    for key, example in required.items():
        if not values.get(key):
            raise UserError(f"missing {key}={example}; see --help")
    overwrite = values.pop("overwrite", "false").strip().lower()
    if overwrite not in _TRUE | _FALSE:
        raise UserError(f"overwrite={overwrite!r} must be true or false")
    device = values.pop("device", "cpu").strip().lower()
    if device not in {"cpu", "cuda"} and not device.startswith("cuda:"):
        raise UserError(f"device={device!r} must be cpu or cuda")
    return {**values, "overwrite": overwrite in _TRUE, "device": device}


def parse_options(argv: list[str]) -> ForecastOptions:
    return ForecastOptions(**read_options(argv, ForecastOptions,
                                          {"checkpoint": "<path of best.pt or last.pt>"}))


def origin_label(origin: pd.Timestamp, freq: str) -> str:
    """File-name-safe label of a forecast origin: 2018-06-26T1900, or 2018-06-26 for daily data."""
    from informer.data.timefeatures import frequency_resolution

    if frequency_resolution(freq) in {"day", "week", "month", "year"}:
        return origin.strftime("%Y-%m-%d")
    if frequency_resolution(freq) == "second":
        return origin.strftime("%Y-%m-%dT%H%M%S")
    return origin.strftime("%Y-%m-%dT%H%M")


def _refuse_existing(path: Path, overwrite: bool, what: str) -> None:
    if path.is_dir():
        raise UserError(f"{what} path {path} is a directory; give a file name")
    if path.exists() and not overwrite:
        raise UserError(
            f"{what} file {path} already exists; pass overwrite=true to replace it or choose another {what}="
        )


def _output_paths(opts: ForecastOptions, default_stem: str | None) -> tuple[Path | None, Path | None]:
    """(csv, png); None where the name depends on the data and ``default_stem`` is not known yet."""
    csv: Path | None
    if opts.output is None or opts.output.endswith(("/", os.sep)) or Path(opts.output).is_dir():
        folder = Path(opts.output) if opts.output else Path.cwd()
        csv = None if default_stem is None else folder / f"{default_stem}.csv"
    else:
        csv = Path(opts.output)
    if opts.plot is not None and opts.plot.strip().lower() in _NO_PLOT:
        return csv, None
    if opts.plot is not None:
        return csv, Path(opts.plot)
    return csv, None if csv is None else csv.with_suffix(".png")


def _check_paths(opts: ForecastOptions, csv: Path | None, png: Path | None, inputs: list[Path]) -> None:
    for path, what in ((csv, "output"), (png, "plot")):
        if path is None:
            continue
        _refuse_existing(path, opts.overwrite, what)
        for source in inputs:
            if path.resolve() == source.resolve():
                raise UserError(f"{what} path {path} is the input file; choose another {what}=")
    if csv is not None and png is not None and csv.resolve() == png.resolve():
        raise UserError(f"output and plot are the same file ({csv}); give the plot a .png name")


def _write(path: Path, content: bytes, overwrite: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not overwrite:
        try:
            with open(path, "xb") as handle:  # exclusive: never clobber a file that appeared meanwhile
                handle.write(content)
        except FileExistsError:
            raise UserError(f"{path} appeared while forecasting; pass overwrite=true to replace it") from None
        return
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.name}.", dir=path.parent)
    with os.fdopen(fd, "wb") as handle:
        handle.write(content)
    os.replace(tmp, path)


def run_forecast(opts: ForecastOptions) -> tuple[Path, Path | None]:
    """The whole command; returns the paths written. Raises UserError for bad input."""
    checkpoint = Path(opts.checkpoint)
    # Paths the user named are checked before anything is loaded.
    csv, png = _output_paths(opts, None)
    _check_paths(opts, csv, png, [checkpoint] + ([Path(opts.input)] if opts.input else []))
    if not checkpoint.exists():  # before importing torch, so the common typo fails fast
        raise UserError(f"checkpoint {checkpoint} does not exist; pass the path of a best.pt or last.pt")

    from informer.forecast.api import Forecaster
    from informer.forecast.io import TRUE_SUFFIX

    fc = Forecaster.from_checkpoint(checkpoint, device=opts.device)
    if fc.low_skill_note is not None:  # a caution, not an error: the forecast is still made
        print(f"note: {fc.low_skill_note}", file=sys.stderr, flush=True)
    source = Path(opts.input) if opts.input else fc.default_input()
    table = fc.table(source)
    for note in table.notes:
        print(f"note: {note}", flush=True)
    origin = table.timestamps[fc.locate(table, opts.as_of) - 1]
    named, png = _output_paths(opts, f"forecast_{origin_label(origin, fc.freq)}")
    csv = named if named is not None else Path(f"forecast_{origin_label(origin, fc.freq)}.csv")
    _check_paths(opts, csv, png, [checkpoint, source])

    result = fc.run(table, opts.as_of)
    content = result.frame.to_csv(float_format="%.10g").encode()
    image = None
    if png is not None:
        from informer.forecast.plot import render_forecast_png

        title = (f"{fc.features} forecast of {', '.join(fc.output_columns[:3])}"
                 f"{' ...' if len(fc.output_columns) > 3 else ''} after {result.origin} ({checkpoint.name})")
        image, note = render_forecast_png(result, title)
        if note:
            print(f"note: {note}", flush=True)
    _write(csv, content, opts.overwrite)
    if image is not None and png is not None:
        _write(png, image, opts.overwrite)
    frame = result.frame
    print(f"forecast: {len(frame)} steps ({frame.index[0]} to {frame.index[-1]}, freq {fc.freq}) "
          f"after {result.origin}, from {source}")
    if any(c.endswith(TRUE_SUFFIX) for c in frame.columns):
        print("backtest: the CSV has <name>_true columns with the data's values at those timestamps")
    print(f"wrote {csv}")
    if png is not None:
        print(f"wrote {png}")
    # after the work, so that an error stays the only line of a failed run
    if fc.calibration_note is not None:  # older checkpoints: points only, and how to add intervals
        print(f"note: {fc.calibration_note}", file=sys.stderr, flush=True)
    return csv, png
