"""Inference: evaluation throughput on the ETTh1 test split, and forecast latency from a checkpoint.

Throughput: the default-size model (untrained weights: speed does not depend on them) in eval mode
under ``torch.inference_mode``, over the first ``Scale.throughput_windows`` test windows in order.

Latency: a default-size checkpoint is written with ``save_checkpoint`` and the contract's payload,
then (a) ``python scripts/forecast.py checkpoint=... input=... output=...`` is timed as a whole
process, start to exit with the CSV written, and (b) the forecast helper's in-process API is timed:
load once, then repeated forecasts (``informer.forecast.forecast_latency``).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

import informer
from benchmarks.common import ATTENTION_KINDS, REPO_ROOT, Scale, data_dir, load_bundle, random_batch
from informer.checkpoint import save_checkpoint
from informer.data import make_decoder_input
from informer.model import build_model


def _windows(scale: Scale, cfg: Any, bundle: Any, batch: int) -> tuple[list[tuple[torch.Tensor, ...]], str]:
    if bundle is None:
        n = scale.throughput_windows or 2048
        gen = torch.Generator().manual_seed(0)
        return [random_batch(cfg, min(batch, n - i), gen) for i in range(0, n, batch)], "random tensors"
    n = min(len(bundle.test), scale.throughput_windows or len(bundle.test))
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(bundle.test, range(n)), batch_size=batch)
    return list(loader), f"ETTh1 test split, first {n} of {len(bundle.test)} windows"


def throughput(scale: Scale, log: Any = print) -> dict[str, Any]:
    """Windows per second per attention kind and batch size.

    The kinds take turns batch by batch (prob, full, favor, prob, ...), so a change in machine load
    while this runs hits all of them alike and their ratios stay meaningful.
    """
    bundle = load_bundle(scale.model_config("prob"))
    cfgs = {attn: scale.model_config(attn) for attn in ATTENTION_KINDS}
    models = {}
    for attn, cfg in cfgs.items():
        torch.manual_seed(0)
        models[attn] = build_model(cfg).eval()
    results: dict[str, Any] = {attn: {} for attn in ATTENTION_KINDS}
    source = ""
    for batch in scale.eval_batches:
        batches, source = _windows(scale, cfgs["prob"], bundle, batch)
        n = sum(b[0].shape[0] for b in batches)
        seconds = dict.fromkeys(ATTENTION_KINDS, 0.0)
        with torch.inference_mode():
            for attn in ATTENTION_KINDS:
                _forward(models[attn], cfgs[attn], batches[0])  # warm-up
            for b in batches:
                for attn in ATTENTION_KINDS:
                    start = time.perf_counter()
                    _forward(models[attn], cfgs[attn], b)
                    seconds[attn] += time.perf_counter() - start
        for attn in ATTENTION_KINDS:
            results[attn][str(batch)] = {"windows": n, "seconds": seconds[attn],
                                         "windows_per_s": n / seconds[attn]}
            log(f"  inference {attn:5s} batch {batch:3d}: {n / seconds[attn]:8.1f} windows/s")
    return {"source": source, "kinds": results,
            "method": "eval mode, torch.inference_mode, one warm-up batch, windows in order, kinds "
                      "interleaved batch by batch"}


def _forward(model: Any, cfg: Any, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
    x_enc, x_mark, y, y_mark = batch
    return model(x_enc, x_mark, make_decoder_input(y, cfg.label_len, cfg.pred_len), y_mark)


# ---------------------------------------------------------------------------------------- latency
def _synthetic_csv(path: Path, rows: int = 400) -> Path:
    rng = np.random.default_rng(0)
    index = pd.date_range("2020-01-01", periods=rows, freq="h")
    columns = ["HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT"]
    frame = pd.DataFrame(rng.standard_normal((rows, len(columns))).cumsum(0), columns=columns)
    frame.insert(0, "date", index.strftime("%Y-%m-%d %H:%M:%S"))
    frame.to_csv(path, index=False)
    return path


def write_checkpoint(scale: Scale, folder: Path) -> tuple[Path, Path]:
    """A default-size checkpoint (untrained weights) and the CSV to forecast from."""
    cfg = scale.model_config("prob")
    bundle = load_bundle(cfg)
    if bundle is not None:
        data, csv = bundle.checkpoint_data(), data_dir() / "ETTh1.csv"
    else:
        csv = _synthetic_csv(folder / "series.csv")
        data = {"columns": ["HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT"], "target": "OT",
                "features": "M", "freq": "h", "date_column": "date", "scaler_mean": [0.0] * 7,
                "scaler_scale": [1.0] * 7, "last_timestamp": None, "first_timestamp": None,
                "source": str(csv), "embed": cfg.embed, "seasonal_period": 24}
    torch.manual_seed(0)
    model = build_model(cfg)
    payload = {"model_config": cfg.to_dict(), "model_state": model.state_dict(),
               "config": {"model": cfg.to_dict(), "note": "benchmark checkpoint, untrained weights"},
               "data": data,
               "versions": {"torch": str(torch.__version__), "informer": str(informer.__version__),
                            "threads": torch.get_num_threads()}}
    return save_checkpoint(payload, folder / "best.pt"), csv


def _forecast_process(checkpoint: Path, csv: Path, out: Path, plot: bool, threads: int) -> float:
    cmd = [sys.executable, str(REPO_ROOT / "scripts" / "forecast.py"), f"checkpoint={checkpoint}",
           f"input={csv}", f"output={out}", "overwrite=true"] + ([] if plot else ["plot=none"])
    env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **env}, cwd=REPO_ROOT,
                          timeout=300)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0 or not out.is_file():
        raise RuntimeError(f"scripts/forecast.py failed ({proc.returncode}): {proc.stderr.strip()[-300:]}")
    return elapsed


def latency(scale: Scale, threads: int, log: Any = print) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="informer-bench-") as tmp:
        folder = Path(tmp)
        checkpoint, csv = write_checkpoint(scale, folder)
        result: dict[str, Any] = {"checkpoint_mib": checkpoint.stat().st_size / 2**20, "input": str(csv)}
        for plot in (False, True) if scale.mode != "tiny" else (False,):
            try:
                times = [_forecast_process(checkpoint, csv, folder / f"forecast{i}.csv", plot, threads)
                         for i in range(scale.forecast_reps)]
                entry: dict[str, Any] = {"median_s": statistics.median(times), "min_s": min(times),
                                         "n": len(times)}
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                entry = {"error": str(exc)}
            result["process_with_plot" if plot else "process_csv_only"] = entry
            log(f"  forecast process ({'csv + png' if plot else 'csv only'}): {entry}")
        try:
            from informer.forecast import forecast_latency

            result["in_process"] = forecast_latency(checkpoint, csv, repeats=scale.forecast_inproc_reps)
            log(f"  forecast in-process: {result['in_process']}")
        except (ImportError, RuntimeError) as exc:
            result["in_process"] = {"error": str(exc)}
    result["method"] = ("process: wall time of `python scripts/forecast.py checkpoint=... input=... "
                        "output=...` (interpreter start to exit, CSV written), median of n; in_process: "
                        "informer.forecast.forecast_latency (Forecaster.from_checkpoint once, then repeated "
                        "Forecaster.run on an already-read table; model_ms is the network alone)")
    return result


def backtest(scale: Scale, log: Any = print) -> dict[str, Any]:
    """Wall time of a rolling-origin backtest (``informer.forecast.backtest.run_backtest``, stride 1)
    over ``Scale.backtest_origins`` consecutive hourly origins of a default-size checkpoint."""
    from informer.forecast import Forecaster
    from informer.forecast.backtest import run_backtest

    with tempfile.TemporaryDirectory(prefix="informer-bench-") as tmp:
        checkpoint, csv = write_checkpoint(scale, Path(tmp))
        fc = Forecaster.from_checkpoint(checkpoint)
        table = fc.table(csv)
        usable = len(table.timestamps) - fc.seq_len - fc.pred_len + 1
        origins = min(scale.backtest_origins, usable)
        first = fc.seq_len - 1  # the first row with a full look-back
        start, end = table.timestamps[first], table.timestamps[first + origins - 1]
        began = time.perf_counter()
        result = run_backtest(fc, table, start, end, stride=1)
        seconds = time.perf_counter() - began
    entry = {"origins": int(result.metrics["origins"]), "seconds": seconds,
             "origins_per_s": result.metrics["origins"] / seconds, "first_origin": str(start),
             "last_origin": str(end),
             "method": "one run_backtest call at stride 1 (batches of 256 origins: scaling, model, "
                       "intervals, scores of the model and both naive baselines); checkpoint and CSV read "
                       "beforehand"}
    log(f"  backtest: {entry['origins']} origins in {seconds:.1f} s ({entry['origins_per_s']:.0f} origins/s)")
    return entry


def run(scale: Scale, threads: int, log: Any = print) -> dict[str, Any]:
    return {"throughput": throughput(scale, log), "forecast_latency": latency(scale, threads, log),
            "backtest": backtest(scale, log)}
