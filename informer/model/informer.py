"""Informer and InformerStack, built from one :class:`~informer.config.ModelConfig`."""

from __future__ import annotations

import torch
from torch import nn

from informer.config import ModelConfig
from informer.model.attention import AttentionLayer, build_attention
from informer.model.decoder import Decoder, DecoderLayer
from informer.model.embedding import DataEmbedding
from informer.model.encoder import DistilLayer, Encoder, EncoderLayer, EncoderStack
from informer.model.heads import QuantileHead, assemble, denormalize_quantiles
from informer.model.normalization import DestationaryFactor, RevIN

Output = torch.Tensor | tuple[torch.Tensor, dict[str, list[torch.Tensor | None]]]


def build_encoder(cfg: ModelConfig, n_layers: int) -> Encoder:
    layers = [
        EncoderLayer(AttentionLayer(build_attention(cfg.attn, cfg, causal=False), cfg.d_model, cfg.n_heads),
                     cfg.d_model, cfg.d_ff, cfg.dropout, cfg.activation)
        for _ in range(n_layers)
    ]
    distil = [DistilLayer(cfg.d_model) for _ in range(n_layers - 1)] if cfg.distil else None
    return Encoder(layers, distil, cfg.d_model)


def build_decoder(cfg: ModelConfig) -> Decoder:
    layers = [
        DecoderLayer(
            # masked self-attention of the chosen kind; `mix` as in the official decoder
            AttentionLayer(build_attention(cfg.attn, cfg, causal=True), cfg.d_model, cfg.n_heads,
                           mix=cfg.mix),
            # cross-attention is always full attention
            AttentionLayer(build_attention("full", cfg, causal=False), cfg.d_model, cfg.n_heads),
            cfg.d_model, cfg.d_ff, cfg.dropout, cfg.activation,
        )
        for _ in range(cfg.d_layers)
    ]
    return Decoder(layers, cfg.d_model)


class Informer(nn.Module):
    """Informer (Zhou et al., AAAI 2021), with optional RevIN, de-stationary attention and channel
    independence (``cfg.norm``, ``cfg.destationary``, ``cfg.channel_independent``).

    ``forward(x_enc, x_mark_enc, x_dec, x_mark_dec)``:
        x_enc ``[B, seq_len, enc_in]``, x_mark_enc ``[B, seq_len, M]``,
        x_dec ``[B, label_len + pred_len, dec_in]``, x_mark_dec ``[B, label_len + pred_len, M]``
        -> ``[B, pred_len, c_out]``, or with ``cfg.quantiles`` (Q levels) ``[B, pred_len, c_out, Q]``,
        increasing along the last axis (:mod:`informer.model.heads`); with ``cfg.output_attention`` also a
        dict of attention maps
        ``{"encoder": [...], "decoder_self": [...], "decoder_cross": [...]}``, one ``[B, H, L_Q, L_K]``
        tensor per layer (the decoder's last layer has ``pred_len`` query rows in cross-attention).

    With ``channel_independent`` every variable is its own univariate series through one shared
    network (batch ``B * C``, time features shared), and the forecasts are put back side by side.

    The point forecast of a quantile model is :func:`informer.intervals.point_forecast` of the output.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg.validate()
        self.pred_len = cfg.pred_len
        self.output_attention = cfg.output_attention
        self.channel_independent = cfg.channel_independent
        self.quantiles = tuple(cfg.quantiles) if cfg.quantiles is not None else None
        widths = (1, 1, 1) if cfg.channel_independent else (cfg.enc_in, cfg.dec_in, cfg.c_out)
        self.revin = RevIN(cfg.enc_in, cfg.revin_affine) if cfg.norm == "revin" else None
        if cfg.destationary:
            self.tau_learner = DestationaryFactor(widths[0], cfg.seq_len, 1)
            self.delta_learner = DestationaryFactor(widths[0], cfg.seq_len, cfg.seq_len)
        self.enc_embedding = DataEmbedding(widths[0], cfg)
        self.dec_embedding = DataEmbedding(widths[1], cfg)
        self.encoder: nn.Module = self._build_encoder(cfg)
        self.decoder = build_decoder(cfg)
        # a point model keeps the plain projection (and its state-dict keys, so older checkpoints load)
        self.projection: nn.Module = (nn.Linear(cfg.d_model, widths[2]) if self.quantiles is None
                                      else QuantileHead(cfg.d_model, widths[2], self.quantiles))

    def _build_encoder(self, cfg: ModelConfig) -> nn.Module:
        return build_encoder(cfg, cfg.e_layers)

    def _check_inputs(self, x_enc: torch.Tensor, x_dec: torch.Tensor) -> None:
        cfg = self.cfg
        if x_enc.dim() != 3 or x_enc.shape[-1] != cfg.enc_in:
            raise ValueError(f"x_enc must be [batch, seq_len, enc_in={cfg.enc_in}], got {tuple(x_enc.shape)}")
        if x_dec.dim() != 3 or x_dec.shape[-1] != cfg.dec_in or x_dec.shape[1] < self.pred_len:
            raise ValueError(f"x_dec must be [batch, label_len + pred_len, dec_in={cfg.dec_in}] with at "
                             f"least pred_len={self.pred_len} steps, got {tuple(x_dec.shape)}")

    def forward(self, x_enc: torch.Tensor, x_mark_enc: torch.Tensor, x_dec: torch.Tensor,
                x_mark_dec: torch.Tensor, *, trim_decoder: bool = True) -> Output:
        """``trim_decoder=False`` runs the last decoder layer on every row (same output, slower)."""
        self._check_inputs(x_enc, x_dec)
        raw, stats = x_enc, None
        if self.revin is not None:
            stats = self.revin.statistics(x_enc)  # [B, 1, C] each
            x_enc = self.revin.normalize(x_enc, stats)
            known = x_dec.shape[1] - self.pred_len  # start-token rows: same statistics, placeholders 0
            x_dec = torch.cat([self.revin.normalize(x_dec[:, :known], stats),
                               torch.zeros_like(x_dec[:, known:])], dim=1)
        n_channels = x_enc.shape[-1]
        if self.channel_independent:
            x_enc, x_dec, raw = _fold(x_enc), _fold(x_dec), _fold(raw)  # [B * C, L, 1]
            x_mark_enc = x_mark_enc.repeat_interleave(n_channels, dim=0)
            x_mark_dec = x_mark_dec.repeat_interleave(n_channels, dim=0)
        tau = delta = None
        if stats is not None and self.cfg.destationary:
            mean, std = stats.mean, stats.std
            if self.channel_independent:
                mean, std = _fold(mean), _fold(std)  # [B * C, 1, 1]
            tau = self.tau_learner(raw, std).exp()  # [B', 1], positive
            delta = self.delta_learner(raw, mean)  # [B', seq_len]
        enc_out, enc_maps = self.encoder(self.enc_embedding(x_enc, x_mark_enc), tau, delta)  # [B', L_E, d]
        dec_out, self_maps, cross_maps = self.decoder(
            self.dec_embedding(x_dec, x_mark_dec), enc_out,
            keep_last=self.pred_len if trim_decoder else None, tau=tau,
        )  # [B', pred_len (or L_D), d_model]
        dec_out = dec_out[:, -self.pred_len:]  # [B', pred_len, d_model]
        if self.quantiles is None:
            out = self._unfold(self.projection(dec_out), n_channels)  # [B, pred_len, c_out]
            if stats is not None:
                out = self.revin.denormalize(out, stats)
        else:
            lowest, gaps = self.projection(dec_out)  # [B', pred_len, c_out or 1], [..., Q - 1]
            lowest, gaps = self._unfold(lowest, n_channels), self._unfold(gaps, n_channels)
            if stats is not None:
                lowest, gaps = denormalize_quantiles(self.revin, lowest, gaps, stats)
            out = assemble(lowest, gaps)  # [B, pred_len, c_out, Q]
        if self.output_attention:
            return out, {"encoder": enc_maps, "decoder_self": self_maps, "decoder_cross": cross_maps}
        return out

    def _unfold(self, x: torch.Tensor, n_channels: int) -> torch.Tensor:
        """Channel-independent: ``[B * C, pred_len, 1, *rest] -> [B, pred_len, C, *rest]``; else ``x``."""
        if not self.channel_independent:
            return x
        rest = x.shape[3:]
        return x.reshape(-1, n_channels, self.pred_len, *rest).transpose(1, 2)


def _fold(x: torch.Tensor) -> torch.Tensor:
    """``[B, L, C] -> [B * C, L, 1]``: row ``b * C + c`` holds channel c of window b."""
    b, length, c = x.shape
    return x.transpose(1, 2).reshape(b * c, length, 1)


class InformerStack(Informer):
    """Informer with a stack of encoders (lengths L, L/2, L/4, ... with ``s_layers`` layers each)."""

    def _build_encoder(self, cfg: ModelConfig) -> nn.Module:
        if cfg.seq_len // 2 ** (len(cfg.s_layers) - 1) < 1:
            raise ValueError(f"model.seq_len ({cfg.seq_len}) is too short for {len(cfg.s_layers)} stacked "
                             f"encoders (model.s_layers): each one reads half of the previous one's input")
        return EncoderStack([build_encoder(cfg, int(n)) for n in cfg.s_layers])


def build_model(cfg: ModelConfig) -> Informer:
    """Informer, or InformerStack when ``cfg.name == 'informer_stack'``."""
    cfg.validate()
    return InformerStack(cfg) if cfg.name == "informer_stack" else Informer(cfg)
