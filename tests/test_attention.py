"""Attention cores: ProbSparse and FAVOR+ against exact attention, causality, determinism, mix."""

from __future__ import annotations

import pytest
import torch

from informer.model import AttentionLayer, FavorAttention, FullAttention, ProbAttention
from informer.model.probsparse import (
    sampled_scores,
    sampled_scores_dense,
    sampled_scores_gathered,
    sampled_scores_sddmm,
)


def qkv(l_q: int, l_k: int, b: int = 2, h: int = 3, e: int = 8, scale: float = 1.0, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, l_q, h, e, generator=g) * scale
    k = torch.randn(b, l_k, h, e, generator=g) * scale
    v = torch.randn(b, l_k, h, e, generator=g)
    return q, k, v


LENGTHS = [(20, 20), (12, 30), (30, 12)]


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(("l_q", "l_k"), LENGTHS)
@pytest.mark.parametrize("weights", [False, True])
def test_prob_with_every_query_active_equals_full(causal: bool, l_q: int, l_k: int, weights: bool) -> None:
    q, k, v = qkv(l_q, l_k)
    prob = ProbAttention(causal, factor=100, output_attention=weights).eval()
    assert prob.budget(l_q) >= l_q and prob.budget(l_k) >= l_k  # every query active, every key sampled
    full = FullAttention(causal, output_attention=weights).eval()
    out_p, w_p = prob(q, k, v)
    out_f, w_f = full(q, k, v)
    torch.testing.assert_close(out_p, out_f, atol=1e-5, rtol=0)
    if weights:
        torch.testing.assert_close(w_p, w_f, atol=1e-5, rtol=0)


@pytest.mark.parametrize("causal", [False, True])
def test_full_fused_and_explicit_paths_agree(causal: bool) -> None:
    q, k, v = qkv(17, 17)
    fused, _ = FullAttention(causal).eval()(q, k, v)
    explicit, w = FullAttention(causal, output_attention=True).eval()(q, k, v)
    torch.testing.assert_close(fused, explicit, atol=1e-5, rtol=0)
    assert w.shape == (2, 3, 17, 17)


def test_prob_every_query_active_but_keys_sampled_uses_sampling() -> None:
    # factor 1: u = ceil(ln 6) = 2 < 6 queries and U = ceil(ln 40) = 4 < 40 keys
    prob = ProbAttention(False, factor=1).eval()
    q, k, v = qkv(6, 40)
    out, _ = prob(q, k, v)
    assert out.shape == q.shape
    assert prob.last_key_indices is not None and prob.last_key_indices.shape == (6, 4)


@pytest.mark.parametrize("causal", [False, True])
def test_sampled_scores_and_sparsity_match_reference(causal: bool) -> None:
    prob = ProbAttention(causal, factor=2)
    q, k, _ = qkv(40, 40)
    idx = prob.sample_key_indices(40, 40)
    assert idx is not None and idx.shape == (40, prob.budget(40))
    reference = torch.einsum("blhe,bluhe->blhu", q, k[:, idx])  # [B, L_Q, H, U], gathered naively
    torch.testing.assert_close(sampled_scores(q, k, idx), reference, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sampled_scores_sddmm(q, k, idx), reference, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sampled_scores_dense(q, k, idx, max_elements=500), reference,
                               atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sampled_scores_gathered(q, k, idx, max_elements=500), reference,
                               atol=1e-5, rtol=1e-5)
    m = prob.sparsity_measure(q, k, idx)
    torch.testing.assert_close(m, reference.amax(-1) - reference.sum(-1) / 40, atol=1e-5, rtol=1e-5)


def test_sparsity_with_all_keys_respects_causal_mask() -> None:
    prob = ProbAttention(True, factor=100)
    q, k, _ = qkv(10, 10)
    assert prob.sample_key_indices(10, 10) is None  # U >= L_K: every key
    scores = torch.einsum("blhe,bshe->blhs", q, k)
    expected = torch.stack([scores[:, i, :, : i + 1].amax(-1) - scores[:, i, :, : i + 1].sum(-1) / 10
                            for i in range(10)], dim=1)
    torch.testing.assert_close(prob.sparsity_measure(q, k, None), expected)


def test_causal_prob_samples_only_past_keys() -> None:
    prob = ProbAttention(True, factor=3).eval()
    q, k, v = qkv(64, 64)
    prob(q, k, v)
    idx = prob.last_key_indices
    assert idx is not None and idx.shape == (64, prob.budget(64))
    assert bool((idx <= torch.arange(64).unsqueeze(1)).all())
    assert bool((idx >= 0).all())
    # early queries see few keys but still draw from all of them over many samples
    generator = torch.Generator().manual_seed(0)
    many = ProbAttention(True, factor=40).sample_key_indices(300, 300, generator=generator)
    assert many is not None and set(many[5].tolist()) == set(range(6))


def test_prob_lazy_queries_get_mean_of_values() -> None:
    torch.manual_seed(0)
    for causal in (False, True):
        prob = ProbAttention(causal, factor=1).eval()  # u = 4 of 48 queries active
        q, k, v = qkv(48, 48)
        out, _ = prob(q, k, v)
        if causal:
            lazy = v.cumsum(1) / torch.arange(1, 49).view(1, 48, 1, 1)
        else:
            lazy = v.mean(1, keepdim=True).expand_as(out)
        matches = torch.isclose(out, lazy, atol=1e-6).all(-1)  # [B, L, H]
        assert int((~matches).sum(1).max()) <= prob.budget(48)  # at most u rows differ per head


def test_prob_output_attention_rows_are_distributions() -> None:
    prob = ProbAttention(True, factor=1, output_attention=True).eval()
    q, k, v = qkv(30, 30)
    out, w = prob(q, k, v)
    assert w.shape == (2, 3, 30, 30)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 3, 30))
    assert not bool(w.triu(diagonal=1).any())
    torch.testing.assert_close(out, torch.einsum("bhls,bshe->blhe", w, v), atol=1e-5, rtol=0)


@pytest.mark.parametrize("make", [
    lambda: FullAttention(True),
    lambda: FullAttention(True, output_attention=True),
    lambda: FavorAttention(True, 8, 32, 0, chunk_size=4),
])
def test_masked_attention_never_reads_the_future(make) -> None:
    core = make().eval()
    q, k, v = qkv(19, 19, scale=0.5)
    out, _ = core(q, k, v)
    t = 9
    q2, k2, v2 = q.clone(), k.clone(), v.clone()
    for x in (q2, k2, v2):
        x[:, t + 1:] = torch.randn_like(x[:, t + 1:]) * 0.5
    out2, _ = core(q2, k2, v2)
    torch.testing.assert_close(out2[:, : t + 1], out[:, : t + 1], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(out2[:, t + 1:], out[:, t + 1:])


def test_favor_approaches_full_attention_as_features_grow() -> None:
    errors = {16: [], 256: []}
    for seed in range(4):
        q, k, v = qkv(32, 32, h=2, e=16, scale=0.5, seed=seed)
        for causal in (False, True):
            exact, _ = FullAttention(causal)(q, k, v)
            for m in errors:
                torch.manual_seed(seed)
                approx, _ = FavorAttention(causal, 16, m, 0).eval()(q, k, v)
                errors[m].append((approx - exact).abs().mean().item())
    small, large = sum(errors[16]) / 8, sum(errors[256]) / 8
    assert large < 0.6 * small, (small, large)


@pytest.mark.parametrize("length", [1, 5, 16, 23])
def test_favor_causal_prefix_sums_match_masked_kernel(length: int) -> None:
    core = FavorAttention(True, 8, 24, 0, output_attention=True, chunk_size=4).eval()
    q, k, v = qkv(length, length, scale=0.5)
    out, w = core(q, k, v)  # w: the normalised masked kernel matrix, computed quadratically
    torch.testing.assert_close(out, torch.einsum("bhls,bshe->blhe", w, v), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("length", [5, 16, 23])
def test_favor_causal_gradients_match_the_masked_kernel(length: int) -> None:
    core = FavorAttention(True, 8, 24, 0, output_attention=True, chunk_size=4).double().eval()
    q, k, v = (t.double().requires_grad_() for t in qkv(length, length, scale=0.5))
    out, w = core(q, k, v)
    expected = torch.einsum("bhls,bshe->blhe", w, v)  # the quadratic masked kernel, through autograd
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, (q, k, v), grad, retain_graph=True)
    want = torch.autograd.grad(expected, (q, k, v), grad)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


def test_favor_features_redraw_on_schedule_and_stay_fixed_in_eval() -> None:
    torch.manual_seed(0)
    core = FavorAttention(False, 8, 16, feature_redraw_interval=2)
    q, k, v = qkv(6, 6)
    first = core.projection.clone()
    core.train()
    core(q, k, v)
    core(q, k, v)
    assert torch.equal(core.projection, first)  # two calls: not yet
    core(q, k, v)
    assert not torch.equal(core.projection, first)  # third call redraws
    core.eval()
    drawn = core.projection.clone()
    for _ in range(5):
        core(q, k, v)
    assert torch.equal(core.projection, drawn)
    never = FavorAttention(False, 8, 16, feature_redraw_interval=0).train()
    before = never.projection.clone()
    for _ in range(5):
        never(q, k, v)
    assert torch.equal(never.projection, before)


def test_favor_default_feature_count() -> None:
    assert FavorAttention(False, 64).nb_features == 267  # ceil(64 ln 64)
    assert FavorAttention(False, 4).nb_features == 8  # floor of 2E for tiny heads


@pytest.mark.parametrize("make", [lambda c: FullAttention(c, 0.1), lambda c: ProbAttention(c, 1, 0.1),
                                  lambda c: FavorAttention(c, 8, 16, 1)])
@pytest.mark.parametrize("causal", [False, True])
def test_eval_mode_is_deterministic(make, causal: bool) -> None:
    core = make(causal).eval()
    q, k, v = qkv(40, 40)
    torch.manual_seed(1)
    a, _ = core(q, k, v)
    torch.manual_seed(2)
    b, _ = core(q, k, v)
    assert torch.equal(a, b)


def test_prob_training_sampling_follows_the_global_seed() -> None:
    prob = ProbAttention(False, factor=1).train()
    q, k, v = qkv(40, 40)
    torch.manual_seed(3)
    a, _ = prob(q, k, v)
    idx_a = prob.last_key_indices
    torch.manual_seed(3)
    b, _ = prob(q, k, v)
    assert torch.equal(a, b) and torch.equal(idx_a, prob.last_key_indices)
    prob(q, k, v)
    assert not torch.equal(idx_a, prob.last_key_indices)


def test_prob_applies_attention_dropout_to_active_queries() -> None:
    prob = ProbAttention(False, factor=100, dropout=0.5)
    q, k, v = qkv(10, 10)
    torch.manual_seed(0)
    train_out, _ = prob.train()(q, k, v)
    eval_out, _ = prob.eval()(q, k, v)
    assert not torch.allclose(train_out, eval_out)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("make", [lambda c: FullAttention(c, dropout=0.3),
                                  lambda c: ProbAttention(c, factor=100, dropout=0.3)])
def test_attention_dropout_in_training_is_unbiased(make, causal: bool) -> None:
    core = make(causal)
    q, k, v = qkv(9, 9, b=1, h=2, e=4)
    expected, _ = core.eval()(q, k, v)
    core.train()
    torch.manual_seed(0)
    draws = torch.stack([core(q, k, v)[0] for _ in range(4000)])  # dropout differs between draws
    assert not torch.equal(draws[0], draws[1])
    # a row's output has std at most max|v| * sqrt(p / (1 - p) / n) over n draws: allow 5 of those
    bound = 5 * v.abs().max().item() * (0.3 / 0.7 / len(draws)) ** 0.5
    torch.testing.assert_close(draws.mean(0), expected, atol=bound, rtol=0)


@pytest.mark.parametrize("length", [1, 2, 3])
def test_prob_tiny_lengths(length: int) -> None:
    for causal in (False, True):
        q, k, v = qkv(length, length)
        out, _ = ProbAttention(causal, factor=5).eval()(q, k, v)
        exact, _ = FullAttention(causal)(q, k, v)
        torch.testing.assert_close(out, exact, atol=1e-5, rtol=0)


@pytest.mark.parametrize("mix", [False, True])
def test_attention_layer_mix_reproduces_official_reshape(mix: bool) -> None:
    torch.manual_seed(0)
    layer = AttentionLayer(FullAttention(False), d_model=12, n_heads=3, mix=mix).eval()
    x = torch.randn(2, 5, 12)
    out, _ = layer(x, x, x)
    q = layer.query_projection(x).view(2, 5, 3, 4)
    k = layer.key_projection(x).view(2, 5, 3, 4)
    v = layer.value_projection(x).view(2, 5, 3, 4)
    weights = torch.softmax(torch.einsum("blhe,bshe->bhls", q, k) / 2, -1)
    heads = torch.einsum("bhls,bshe->blhe", weights, v).contiguous()  # [B, L, H, E], as official
    if mix:  # official: out.transpose(2, 1).contiguous().view(B, L, -1)
        heads = heads.transpose(2, 1).contiguous()
    expected = layer.out_projection(heads.view(2, 5, -1))
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_attention_layer_rejects_indivisible_heads() -> None:
    with pytest.raises(ValueError, match="d_model"):
        AttentionLayer(FullAttention(), d_model=10, n_heads=3)


def test_gradients_reach_queries_keys_values() -> None:
    for core in (ProbAttention(False, 1), ProbAttention(True, 1), FavorAttention(True, 8, 16, 0),
                 FullAttention(True)):
        q, k, v = (t.requires_grad_() for t in qkv(30, 30))
        out, _ = core(q, k, v)
        out.square().sum().backward()
        for t in (q, k, v):
            assert t.grad is not None and bool(t.grad.abs().sum() > 0)


@pytest.mark.parametrize("make", [lambda c: FullAttention(c), lambda c: ProbAttention(c, factor=1),
                                  lambda c: FavorAttention(c, 8, 16, 0)])
@pytest.mark.parametrize("causal", [False, True])
def test_output_keeps_the_input_dtype_under_bfloat16_autocast(make, causal: bool) -> None:
    """Under autocast some ops (cumsum, mean, softmax) run in float32 while the projections give bf16:
    every core still returns its input's dtype, and the result stays close to float32 attention."""
    core = make(causal).eval()
    q, k, v = (t.requires_grad_() for t in qkv(150, 150))
    expected, _ = core(q, k, v)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = tuple(t.bfloat16() for t in (q, k, v))
        out, _ = core(*low)
    assert out.dtype == torch.bfloat16
    assert (out.float() - expected).abs().mean() < 0.05
    out.float().square().sum().backward()
    assert all(t.grad is not None and bool(torch.isfinite(t.grad).all()) for t in (q, k, v))


@pytest.mark.parametrize("causal", [False, True])
def test_prob_lazy_float32_rows_take_bfloat16_active_rows(causal: bool) -> None:
    """The mixed-dtype path in isolation: float32 lazy means (what cumsum gives under autocast) with
    bf16 active rows from attention, in both directions of the gradient."""
    prob = ProbAttention(causal, factor=1).eval()
    q, k, v = qkv(200, 200)
    v32 = v.clone().requires_grad_()
    q16, k16 = q.bfloat16().requires_grad_(), k.bfloat16().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):  # attention of the active rows runs in bf16
        out, _ = prob(q16, k16, v32)  # v float32, so the lazy rows are float32
    assert out.dtype == torch.bfloat16
    out.float().sum().backward()
    assert v32.grad.dtype == torch.float32 and q16.grad.dtype == torch.bfloat16
    assert bool(torch.isfinite(v32.grad).all())


def test_bfloat16_autocast_model_with_a_decoder_longer_than_128_steps() -> None:
    from informer.config import ModelConfig
    from informer.model import build_model

    cfg = ModelConfig(seq_len=192, label_len=96, pred_len=72, d_model=16, n_heads=2, d_ff=32,
                      enc_in=3, dec_in=3, c_out=3, factor=2)  # decoder length 168
    for attn in ("prob", "full", "favor"):
        torch.manual_seed(0)
        model = build_model(ModelConfig(**{**cfg.to_dict(), "attn": attn}))
        x, xd = torch.randn(2, 192, 3), torch.randn(2, 168, 3)
        marks, dec_marks = torch.randn(2, 192, 4), torch.randn(2, 168, 4)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x, marks, xd, dec_marks)
        assert out.shape == (2, 72, 3)
        out.float().square().mean().backward()
        assert all(p.grad is None or bool(torch.isfinite(p.grad).all()) for p in model.parameters())
