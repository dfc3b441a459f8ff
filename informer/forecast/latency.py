"""In-process forecast timings of a checkpoint (``scripts/benchmark.py``'s inference section)."""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
import torch

from informer.data.frequency import future_timestamps
from informer.forecast.api import Forecaster
from informer.forecast.io import look_back


def forecast_latency(checkpoint: str | os.PathLike[str], input_csv: str | os.PathLike[str],
                     repeats: int = 20, device: str = "cpu") -> dict[str, Any]:
    """In-process timings: load once, read once, then ``repeats`` forecasts of the same input.

    ``predict_ms_*`` is a full ``Forecaster.run`` on an already-read table (window checks, scaling,
    time marks, model, frame); ``model_ms_*`` is the network's forward pass alone.
    """
    t0 = time.perf_counter()
    fc = Forecaster.from_checkpoint(checkpoint, device=device)
    t1 = time.perf_counter()
    table = fc.table(input_csv)
    t2 = time.perf_counter()
    fc.run(table)  # warm-up: the first calls allocate and pick kernels
    predict_ms, model_ms = [], []
    end = fc.locate(table)
    window = look_back(table, end - fc.seq_len, end, fc.freq)
    window_ts = table.timestamps[end - fc.seq_len:end]
    future = future_timestamps(window_ts[-1], fc.freq, fc.pred_len)
    known = fc.known_inputs(table, end, as_of=False)
    for _ in range(max(1, repeats)):
        a = time.perf_counter()
        fc.run(table)
        b = time.perf_counter()
        fc.forecast_window(window, window_ts, future, known)
        if fc.device.type == "cuda":
            torch.cuda.synchronize()
        c = time.perf_counter()
        predict_ms.append((b - a) * 1e3)
        model_ms.append((c - b) * 1e3)
    return {
        "load_s": t1 - t0,
        "read_s": t2 - t1,
        "predict_ms_median": float(np.median(predict_ms)),
        "predict_ms_min": float(np.min(predict_ms)),
        "model_ms_median": float(np.median(model_ms)),
        "model_ms_min": float(np.min(model_ms)),
        "repeats": max(1, repeats),
        "device": str(fc.device),
        "threads": torch.get_num_threads(),
    }
