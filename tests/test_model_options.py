"""RevIN, de-stationary attention and channel independence: their invariants, at the model level."""

from __future__ import annotations

import io

import pytest
import torch

from informer.config import ModelConfig, derive_model_config
from informer.model import FullAttention, ProbAttention, build_model

C, SEQ, LABEL, PRED = 3, 48, 24, 12
OPTIONS = {
    "revin": dict(norm="revin"),
    "revin_destationary": dict(norm="revin", destationary=True),
    "revin_destationary_full": dict(norm="revin", destationary=True, attn="full"),
    "channel_independent": dict(channel_independent=True),
    "all_three": dict(norm="revin", destationary=True, channel_independent=True),
    "stack_all_three": dict(name="informer_stack", s_layers=[2, 1], norm="revin", destationary=True,
                            channel_independent=True),
}


def make(seed: int = 0, **options) -> torch.nn.Module:
    torch.manual_seed(seed)
    cfg = ModelConfig(seq_len=SEQ, label_len=LABEL, pred_len=PRED, d_model=16, n_heads=2, d_ff=32,
                      enc_in=C, dec_in=C, c_out=C, factor=2, **options)
    return build_model(cfg).eval()


def batch(seed: int = 1) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4, SEQ, C, generator=g).cumsum(1)  # a drifting series
    x_dec = torch.cat([x[:, -LABEL:], torch.zeros(4, PRED, C)], dim=1)
    return [x, torch.randn(4, SEQ, 4, generator=g), x_dec, torch.randn(4, LABEL + PRED, 4, generator=g)]


@pytest.mark.parametrize("options", [
    dict(norm="revin"),
    dict(norm="revin", channel_independent=True),
    dict(norm="revin", revin_affine=False, name="informer_stack", s_layers=[2, 1]),
])
def test_revin_forecast_is_equivariant_to_a_positive_affine_map_per_channel(options: dict) -> None:
    """(Not with destationary: its factors are learned from the raw scale on purpose.)"""
    model = make(**options)
    x, marks, x_dec, dec_marks = batch()
    scale, shift = torch.tensor([2.5, 0.3, 7.0]), torch.tensor([-4.0, 10.0, 0.5])
    known = x_dec[:, :LABEL] * scale + shift  # the placeholders stay zero, as the data loader leaves them
    with torch.no_grad():
        out = model(x, marks, x_dec, dec_marks)
        moved = model(x * scale + shift, marks, torch.cat([known, x_dec[:, LABEL:]], 1), dec_marks)
    torch.testing.assert_close(moved, out * scale + shift, atol=1e-3, rtol=1e-4)


def test_without_revin_the_forecast_is_not_equivariant() -> None:
    """The invariant above is a property of RevIN, not of the test."""
    model = make()
    x, marks, x_dec, dec_marks = batch()
    with torch.no_grad():
        out = model(x, marks, x_dec, dec_marks)
        moved = model(x * 3 + 5, marks, x_dec * 3 + 5, dec_marks)
    assert not torch.allclose(moved, out * 3 + 5, atol=1e-2)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("core", [FullAttention, lambda c: ProbAttention(c, factor=1)])
def test_destationary_attention_with_unit_scale_and_no_shift_is_plain_attention(core, causal: bool) -> None:
    attention = core(causal).eval()
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 40, 3, 8, generator=g) for _ in range(3))
    plain, _ = attention(q, k, v)
    rescaled, _ = attention(q, k, v, tau=torch.ones(2, 1), delta=torch.zeros(2, 40))
    torch.testing.assert_close(rescaled, plain, atol=1e-6, rtol=1e-6)
    changed, _ = attention(q, k, v, tau=torch.full((2, 1), 2.0), delta=torch.randn(2, 40, generator=g))
    assert not torch.allclose(changed, plain, atol=1e-3)


def test_destationary_shift_moves_the_prob_sparsity_measure() -> None:
    prob = ProbAttention(False, factor=1)
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 40, 3, 8, generator=g), torch.randn(2, 40, 3, 8, generator=g)
    idx = prob.sample_key_indices(40, 40, generator=torch.Generator().manual_seed(1))
    tau, delta = torch.full((2, 1), 0.5), torch.randn(2, 40, generator=g)
    scores = torch.einsum("blhe,bluhe->blhu", q, k[:, idx]) * 0.5 + delta[:, idx].unsqueeze(2)
    torch.testing.assert_close(prob.sparsity_measure(q, k, idx, tau, delta),
                               scores.amax(-1) - scores.sum(-1) / 40, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["channel_independent", "all_three", "stack_all_three"])
def test_channel_independent_forecasts_read_only_their_own_channel(name: str) -> None:
    model = make(**OPTIONS[name])
    x, marks, x_dec, dec_marks = batch()
    with torch.no_grad():
        out = model(x, marks, x_dec, dec_marks)
        for k in range(C):
            bumped, bumped_dec = x.clone(), x_dec.clone()
            bumped[..., k] += torch.randn(4, SEQ)
            bumped_dec[:, :LABEL, k] = bumped[:, -LABEL:, k]
            moved = model(bumped, marks, bumped_dec, dec_marks)
            others = [j for j in range(C) if j != k]
            torch.testing.assert_close(moved[..., others], out[..., others], atol=1e-5, rtol=1e-5)
            assert not torch.allclose(moved[..., k], out[..., k])


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_state_dict_round_trip_reproduces_the_forecast_and_gradients_reach_every_parameter(name: str) -> None:
    model = make(**OPTIONS[name])
    inputs = batch()
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    copy = make(seed=5, **OPTIONS[name])
    copy.load_state_dict(torch.load(io.BytesIO(buffer.getvalue()), weights_only=True))
    with torch.no_grad():
        torch.testing.assert_close(copy(*inputs), model(*inputs))
    model.train()
    model(*inputs).square().mean().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize(("options", "features", "message"), [
    (dict(destationary=True), "M", "needs model.norm=revin"),
    (dict(norm="revin", destationary=True, attn="favor"), "M", "use model.attn=prob or full"),
    (dict(norm="layer"), "M", "model.norm must be one of"),
    (dict(channel_independent=True), "MS", "set model.channel_independent=false"),
])
def test_bad_option_combinations_name_the_fix(options: dict, features: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        derive_model_config({**ModelConfig().to_dict(), **options}, features, n_columns=C, freq="h")
