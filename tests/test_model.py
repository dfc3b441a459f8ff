"""Informer / InformerStack: shapes, distilling, determinism, gradients, paper size, config checks."""

from __future__ import annotations

import dataclasses
import itertools

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from informer.config import ModelConfig
from informer.data.timefeatures import time_features
from informer.model import Informer, InformerStack, build_model
from informer.model.encoder import DistilLayer, Encoder, EncoderLayer
from informer.model.informer import build_encoder

ATTNS = ["prob", "full", "favor"]
EMBEDS = ["timeF", "fixed", "learned"]


def tiny_cfg(**overrides) -> ModelConfig:
    values = dict(seq_len=24, label_len=12, pred_len=6, d_model=16, n_heads=2, e_layers=2, d_layers=1,
                  s_layers=[2, 1], d_ff=32, factor=2, dropout=0.0, enc_in=3, dec_in=3, c_out=2)
    values.update(overrides)
    return ModelConfig(**values)


def make_inputs(cfg: ModelConfig, batch: int = 2, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    index = pd.date_range("2021-01-01", periods=cfg.seq_len + cfg.pred_len, freq=cfg.freq)
    marks = torch.from_numpy(time_features(index, cfg.freq, cfg.embed)).unsqueeze(0).expand(batch, -1, -1)
    x_enc = torch.randn(batch, cfg.seq_len, cfg.enc_in, generator=g)
    x_dec = torch.cat([x_enc[:, cfg.seq_len - cfg.label_len:, : cfg.dec_in],
                       torch.zeros(batch, cfg.pred_len, cfg.dec_in)], dim=1)
    return x_enc, marks[:, : cfg.seq_len], x_dec, marks[:, cfg.seq_len - cfg.label_len:]


@pytest.mark.parametrize(("name", "attn", "embed", "distil", "freq"),
                         list(itertools.product(["informer", "informer_stack"], ATTNS, EMBEDS,
                                                [True, False], ["h", "15min"])))
def test_output_shape(name: str, attn: str, embed: str, distil: bool, freq: str) -> None:
    cfg = tiny_cfg(name=name, attn=attn, embed=embed, distil=distil, freq=freq)
    model = build_model(cfg)
    assert isinstance(model, InformerStack if name == "informer_stack" else Informer)
    out = model(*make_inputs(cfg))
    assert out.shape == (2, cfg.pred_len, cfg.c_out)
    assert bool(torch.isfinite(out).all())


@pytest.mark.parametrize(("length", "halved"), [(96, 48), (48, 24), (25, 13), (7, 4), (2, 1), (1, 1)])
def test_distilling_halves_length_rounding_up(length: int, halved: int) -> None:
    assert DistilLayer(8)(torch.randn(2, length, 8)).shape == (2, halved, 8)


def test_distilling_state_dict_matches_the_one_dimensional_modules() -> None:
    # checkpoints written when the layer held Conv1d + BatchNorm1d must load unchanged
    old = torch.nn.ModuleDict({"conv": torch.nn.Conv1d(8, 8, 3), "norm": torch.nn.BatchNorm1d(8)})
    new = DistilLayer(8)
    shapes = {k: v.shape for k, v in old.state_dict().items()}
    assert {k: v.shape for k, v in new.state_dict().items()} == shapes
    new.load_state_dict(old.state_dict())


def _distil_reference(layer: DistilLayer, x: torch.Tensor) -> torch.Tensor:
    """The paper's distilling step written with the 1-D ops on a [B, d_model, L] tensor."""
    y = F.pad(x.transpose(1, 2), (1, 1), mode="circular")
    y = F.conv1d(y, layer.conv.weight, layer.conv.bias)
    norm = layer.norm
    y = F.batch_norm(y, norm.running_mean, norm.running_var, norm.weight, norm.bias, norm.training,
                     norm.momentum, norm.eps)
    return F.max_pool1d(F.elu(y), kernel_size=3, stride=2, padding=1).transpose(1, 2)


@pytest.mark.parametrize("length", [96, 25, 2, 1])
def test_distilling_equals_the_one_dimensional_ops(length: int) -> None:
    torch.manual_seed(0)
    layer = DistilLayer(8)
    reference = DistilLayer(8)
    reference.load_state_dict(layer.state_dict())
    x = torch.randn(3, length, 8, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    for training in (True, False):  # training also updates the running statistics used in eval
        layer.train(training)
        reference.train(training)
        out, expected = layer(x), _distil_reference(reference, x_ref)
        torch.testing.assert_close(out, expected)
    torch.testing.assert_close(layer.norm.running_var, reference.norm.running_var)
    grad = torch.randn_like(out)
    out.backward(grad)
    expected.backward(grad)
    torch.testing.assert_close(x.grad, x_ref.grad)
    torch.testing.assert_close(layer.conv.weight.grad, reference.conv.weight.grad)


def test_encoder_output_lengths() -> None:
    cfg = tiny_cfg(seq_len=96, label_len=48, e_layers=3, attn="full")
    out, maps = build_encoder(cfg, 3)(torch.randn(2, 96, 16))
    assert out.shape == (2, 24, 16) and len(maps) == 3
    out, _ = build_encoder(dataclasses.replace(cfg, distil=False), 3)(torch.randn(2, 96, 16))
    assert out.shape == (2, 96, 16)
    out, _ = build_encoder(cfg, 2)(torch.randn(2, 25, 16))
    assert out.shape == (2, 13, 16)


def test_encoder_needs_matching_distil_layers() -> None:
    layer = build_encoder(tiny_cfg(), 1).layers[0]
    assert isinstance(layer, EncoderLayer)
    with pytest.raises(ValueError, match="distilling"):
        Encoder([layer, layer], [], 16)


def test_stack_encoder_reads_halves_and_concatenates() -> None:
    cfg = tiny_cfg(name="informer_stack", s_layers=[3, 2, 1], seq_len=32, label_len=16, attn="full")
    model = build_model(cfg)
    enc_out, maps = model.encoder(torch.randn(2, 32, 16))
    # 32 steps, 3 layers -> 8; 16 steps, 2 layers -> 8; 8 steps, 1 layer -> 8
    assert enc_out.shape == (2, 24, 16) and len(maps) == 6
    x = torch.randn(2, 32, 16)
    second = model.encoder.encoders[1].eval()
    model.eval()
    enc_out, _ = model.encoder(x)
    torch.testing.assert_close(enc_out[:, 8:16], second(x[:, -16:])[0])


@pytest.mark.parametrize("name", ["informer", "informer_stack"])
@pytest.mark.parametrize("attn", ATTNS)
def test_eval_outputs_repeat_exactly(name: str, attn: str) -> None:
    cfg = tiny_cfg(name=name, attn=attn, dropout=0.1, factor=1)
    model = build_model(cfg).eval()
    inputs = make_inputs(cfg)
    torch.manual_seed(1)
    first = model(*inputs)
    torch.manual_seed(2)
    second = model(*inputs)
    assert torch.equal(first, second)


@pytest.mark.parametrize("name", ["informer", "informer_stack"])
@pytest.mark.parametrize(("attn", "embed"), [("prob", "learned"), ("full", "timeF"), ("favor", "fixed")])
def test_every_parameter_gets_a_gradient(name: str, attn: str, embed: str) -> None:
    torch.manual_seed(0)
    cfg = tiny_cfg(name=name, attn=attn, embed=embed, d_layers=2)
    model = build_model(cfg).train()
    model(*make_inputs(cfg)).square().mean().backward()
    missing = [n for n, p in model.named_parameters()
               if p.grad is None or not bool(torch.isfinite(p.grad).all())]
    assert not missing, missing


@pytest.mark.parametrize("attn", ATTNS)
@pytest.mark.parametrize(("d_layers", "mix"), [(1, True), (2, True), (2, False)])
def test_decoder_trimming_matches_untrimmed(attn: str, d_layers: int, mix: bool) -> None:
    torch.manual_seed(0)
    cfg = tiny_cfg(attn=attn, d_layers=d_layers, mix=mix)
    model = build_model(cfg).eval()
    inputs = make_inputs(cfg)
    trimmed = model(*inputs)
    full = model(*inputs, trim_decoder=False)
    torch.testing.assert_close(trimmed, full, atol=1e-5, rtol=1e-5)
    # and at the decoder itself: the kept rows are the last rows of the full computation
    enc_out, _ = model.encoder(model.enc_embedding(inputs[0], inputs[1]))
    dec_in = model.dec_embedding(inputs[2], inputs[3])
    kept, _, _ = model.decoder(dec_in, enc_out, keep_last=cfg.pred_len)
    every, _, _ = model.decoder(dec_in, enc_out)
    assert kept.shape[1] == cfg.pred_len and every.shape[1] == cfg.label_len + cfg.pred_len
    torch.testing.assert_close(kept, every[:, -cfg.pred_len:], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("attn", ATTNS)
def test_output_attention_returns_maps(attn: str) -> None:
    cfg = tiny_cfg(attn=attn, output_attention=True)
    out, maps = build_model(cfg).eval()(*make_inputs(cfg))
    assert out.shape == (2, 6, 2)
    assert [m.shape for m in maps["encoder"]] == [(2, 2, 24, 24), (2, 2, 12, 12)]
    assert maps["decoder_self"][0].shape == (2, 2, 18, 18)
    assert maps["decoder_cross"][0].shape == (2, 2, 6, 12)


@pytest.mark.parametrize("attn", ATTNS)
def test_runs_under_bfloat16_autocast(attn: str) -> None:
    cfg = tiny_cfg(attn=attn, factor=1, dropout=0.1)
    model = build_model(cfg).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(*make_inputs(cfg))
    out.float().square().mean().backward()
    assert out.shape == (2, cfg.pred_len, cfg.c_out)
    assert all(p.grad is not None and bool(torch.isfinite(p.grad).all()) for p in model.parameters())


@pytest.mark.parametrize("attn", ATTNS)
def test_state_dict_round_trip_reproduces_outputs(attn: str) -> None:
    cfg = tiny_cfg(attn=attn)
    model = build_model(cfg).eval()
    clone = build_model(cfg).eval()
    clone.load_state_dict(model.state_dict(), strict=True)
    inputs = make_inputs(cfg)
    assert torch.equal(model(*inputs), clone(*inputs))


def test_positions_beyond_5000_steps() -> None:
    cfg = tiny_cfg(seq_len=5200, label_len=8, pred_len=4, attn="prob", d_model=8, e_layers=1)
    out = build_model(cfg).eval()(*make_inputs(cfg, batch=1))
    assert out.shape == (1, 4, 2)


def test_input_shapes_are_checked() -> None:
    cfg = tiny_cfg()
    model = build_model(cfg)
    x_enc, m_enc, x_dec, m_dec = make_inputs(cfg)
    with pytest.raises(ValueError, match="x_enc"):
        model(x_enc[..., :2], m_enc, x_dec, m_dec)
    with pytest.raises(ValueError, match="x_dec"):
        model(x_enc, m_enc, x_dec[:, :3], m_dec[:, :3])


@pytest.mark.parametrize(("overrides", "field"), [
    (dict(d_model=10, n_heads=3), "d_model"),
    (dict(attn="sparse"), "attn"),
    (dict(embed="onehot"), "embed"),
    (dict(activation="tanh"), "activation"),
    (dict(seq_len=0), "seq_len"),
    (dict(pred_len=-1), "pred_len"),
    (dict(label_len=-1), "label_len"),
    (dict(label_len=30), "label_len"),
    (dict(factor=0), "factor"),
    (dict(name="informer_stack", s_layers=[1, 1, 1, 1, 1, 1], seq_len=16, label_len=8), "seq_len"),
])
def test_invalid_config_raises_naming_the_field(overrides: dict, field: str) -> None:
    cfg = tiny_cfg(**overrides)
    with pytest.raises(ValueError, match=f"model.{field}"):
        build_model(cfg)


PAPER = dict(d_model=512, n_heads=8, e_layers=2, d_layers=1, d_ff=2048, seq_len=96, label_len=48,
             pred_len=24, enc_in=7, dec_in=7, c_out=7, embed="timeF", freq="h", distil=True, attn="prob")


def _raw(formula):
    formula._get_raw = True  # FlopCounterMode passes the tensors themselves, not their shapes
    return formula


@_raw
def _cpu_flash_forward(query, key, value, *args, out_val=None, **kwargs) -> int:
    return sdpa_flop_count(query.shape, key.shape, value.shape)


@_raw
def _cpu_flash_backward(grad_out, query, key, value, *args, out_val=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out.shape, query.shape, key.shape, value.shape)


@_raw
def _sampled_addmm(pattern, mat1, mat2, *args, out_val=None, **kwargs) -> int:
    return 2 * pattern.values().numel() * mat1.shape[-1]


# FlopCounterMode has no formula for CPU flash attention or SDDMM; without these it would report 0 for
# every attention product here, so the budget below would be checked against an undercount.
UNCOUNTED_OPS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_flash_forward,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_flash_backward,
    torch.ops.aten.sparse_sampled_addmm: _sampled_addmm,
}


def test_flop_formulas_see_attention_kernels() -> None:
    q = torch.randn(2, 4, 16, 8, requires_grad=True)
    counter = FlopCounterMode(display=False, custom_mapping=UNCOUNTED_OPS)
    with counter:
        torch.nn.functional.scaled_dot_product_attention(q, q, q).sum().backward()
    counts = {str(op): n for op, n in counter.get_flop_counts()["Global"].items()}
    assert counts["aten._scaled_dot_product_flash_attention_for_cpu"] == 2 * (2 * 2 * 4 * 16 * 16 * 8)
    assert counts["aten._scaled_dot_product_flash_attention_for_cpu_backward"] > 0


def test_paper_size_parameters_and_flops() -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(**PAPER)
    model = build_model(cfg).train()
    n_params = sum(p.numel() for p in model.parameters())
    assert abs(n_params - 11_330_055) <= 0.001 * 11_330_055, n_params
    counter = FlopCounterMode(display=False, custom_mapping=UNCOUNTED_OPS)
    with counter:
        model(*make_inputs(cfg, batch=32)).sum().backward()
    assert counter.get_total_flops() <= 159.2e9 * 1.02, counter.get_total_flops() / 1e9
