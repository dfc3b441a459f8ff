"""Checkpoints written before the model was rewritten in plain PyTorch still load and forecast the same.

The fixture holds, for five architectures, the model config, the state dict, an input batch and the
output that the earlier model (commit acaf7c0: fused dropout/feed-forward, 2-D distilling, matrix-product
token embedding) computed for it in eval mode.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from informer.config import ModelConfig
from informer.model import build_model
from informer.model.favor import FavorAttention

FIXTURE = Path(__file__).parent / "fixtures" / "checkpoints_before_simplification.pt"
CASES = torch.load(FIXTURE, weights_only=True)


@pytest.mark.parametrize("name", sorted(CASES))
def test_earlier_checkpoints_load_strictly_and_give_the_same_forecast(name: str) -> None:
    case = CASES[name]
    model = build_model(ModelConfig.from_dict(case["model_config"]))
    assert set(model.state_dict()) == set(case["model_state"])
    model.load_state_dict(case["model_state"])  # strict: same keys and shapes
    with torch.no_grad():
        out = model.eval()(*case["inputs"])
    torch.testing.assert_close(out, case["output"], atol=1e-5, rtol=1e-5)


def test_favor_redraws_depend_only_on_the_current_features() -> None:
    """DDP replicas hold the same features, so they redraw the same new ones whatever their RNG."""
    torch.manual_seed(0)
    a = FavorAttention(False, 8, 16, feature_redraw_interval=1)
    b = FavorAttention(False, 8, 16, feature_redraw_interval=1)
    b.load_state_dict(a.state_dict())
    torch.manual_seed(1)
    a.redraw_features()
    torch.manual_seed(2)
    b.redraw_features()
    assert torch.equal(a.projection, b.projection)
    first = a.projection.clone()
    a.redraw_features()
    assert not torch.equal(a.projection, first)
