"""CUDA paths: every attention core forward and backward on the GPU, in float32 and under bf16 autocast,
against a float64 CPU reference; and a short AMP training run of a long-decoder preset.

Skipped without a GPU (CI has none); run on a GPU machine with
``INFORMER_DATA_DIR=<folder with ETTh1.csv> python -m pytest -q tests/test_cuda.py``.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest
import torch

from informer.model import FavorAttention, FullAttention, ProbAttention

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

REPO_ROOT = Path(__file__).resolve().parents[1]
CORES = {
    "full": lambda causal: FullAttention(causal),
    "prob": lambda causal: ProbAttention(causal, factor=2),
    "favor": lambda causal: FavorAttention(causal, 16, 48, 0),
    "favor_chunked": lambda causal: FavorAttention(causal, 16, 48, 0, bidirectional_chunk=64),
}
LENGTH = 200  # past 128 steps, where long decoders (horizon 168 and up) live


def _inputs() -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    return tuple(torch.randn(2, LENGTH, 4, 16, generator=g, dtype=torch.float64) * s for s in (0.5, 0.5, 1))


def _run(core: torch.nn.Module, inputs: tuple[torch.Tensor, ...], grad: torch.Tensor, autocast: bool
         ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    leaves = [t.detach().requires_grad_() for t in inputs]
    with torch.autocast(leaves[0].device.type, dtype=torch.bfloat16, enabled=autocast):
        args = [t.bfloat16() for t in leaves] if autocast else leaves  # as projections give them
        out, _ = core(*args)
    assert out.dtype == args[0].dtype  # the input's dtype, also under autocast
    out.float().backward(grad.to(out.device, torch.float32))
    return out.detach().double().cpu(), [t.grad.double().cpu() for t in leaves]


@pytest.mark.parametrize("kind", sorted(CORES))
@pytest.mark.parametrize("causal", [False, True])
def test_core_on_cuda_matches_the_cpu_float64_reference(kind: str, causal: bool) -> None:
    torch.manual_seed(0)
    core = CORES[kind](causal).eval()  # eval: ProbSparse samples keys from a fixed CPU stream
    inputs = _inputs()
    grad = torch.randn(2, LENGTH, 4, 16, dtype=torch.float64)
    ref_out, ref_grads = _run(copy.deepcopy(core).double(), inputs, grad, autocast=False)
    gpu = copy.deepcopy(core).cuda()
    out, grads = _run(gpu, tuple(t.float().cuda() for t in inputs), grad, autocast=False)
    torch.testing.assert_close(out, ref_out, atol=2e-4, rtol=2e-4)
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want, atol=2e-3, rtol=2e-3)
    low_out, low_grads = _run(gpu, tuple(t.float().cuda() for t in inputs), grad, autocast=True)
    assert bool(torch.isfinite(low_out).all()) and all(bool(torch.isfinite(g).all()) for g in low_grads)
    assert (low_out - out).abs().mean() < 0.05  # bf16 rounding, not a different function


def test_prob_on_cuda_equals_full_attention_when_every_query_is_active() -> None:
    inputs = tuple(t.float().cuda() for t in _inputs())
    for causal in (False, True):
        prob, _ = ProbAttention(causal, factor=100)(*inputs)
        full, _ = FullAttention(causal)(*inputs)
        torch.testing.assert_close(prob, full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("amp_dtype", ["bf16", "fp16"])
def test_twenty_amp_training_steps_of_the_horizon_168_preset(amp_dtype: str, ett_dir: Path,
                                                             tmp_path: Path) -> None:
    import subprocess

    run_dir = tmp_path / "run"
    command = [sys.executable, str(REPO_ROOT / "scripts" / "train.py"), "experiment=paper/ETTh1_M_168",
               f"paths.data_dir={ett_dir}", f"hydra.run.dir={run_dir}", "train.device=cuda", "train.amp=true",
               f"train.amp_dtype={amp_dtype}", "train.epochs=1", "train.limit_train_batches=20",
               "train.limit_eval_batches=4", "train.plot_windows=1"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=540, cwd=tmp_path)
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["training"]["global_steps"] == 20
    for split in ("val", "test"):
        assert all(v is None or v == v for v in metrics[split]["model"]["scaled"].values())  # no NaN
        assert metrics[split]["model"]["scaled"]["mse"] < 10
