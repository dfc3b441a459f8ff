"""Time a default-size training step on a CUDA GPU, float32 vs bf16 autocast, per attention kind.

    python benchmarks/gpu_step.py      # from the repository root; prints one JSON line (ms per step)
"""
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from informer.config import ModelConfig
from informer.model import build_model

results = {}
for attn in ("prob", "full", "favor"):
    for amp in (False, True):
        torch.manual_seed(0)
        cfg = ModelConfig(attn=attn)
        model = build_model(cfg).cuda().train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        x, xm = torch.randn(32, 96, 7, device="cuda"), torch.randn(32, 96, 4, device="cuda")
        xd, xdm = torch.randn(32, 72, 7, device="cuda"), torch.randn(32, 72, 4, device="cuda")
        y = torch.randn(32, 24, 7, device="cuda")
        times = []
        for i in range(30):
            torch.cuda.synchronize()
            t = time.perf_counter()
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                loss = torch.nn.functional.mse_loss(model(x, xm, xd, xdm).float(), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            torch.cuda.synchronize()
            if i >= 5:
                times.append(time.perf_counter() - t)
        results[f"{attn}_{'bf16' if amp else 'fp32'}_ms"] = round(statistics.median(times) * 1000, 2)
print(json.dumps(results))
