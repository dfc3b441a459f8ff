"""Informer and InformerStack, built from one :class:`~informer.config.ModelConfig`."""

from __future__ import annotations

import torch
from torch import nn

from informer.config import ModelConfig
from informer.model.attention import AttentionLayer, build_attention
from informer.model.decoder import Decoder, DecoderLayer
from informer.model.embedding import DataEmbedding
from informer.model.encoder import DistilLayer, Encoder, EncoderLayer, EncoderStack

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
    """Informer (Zhou et al., AAAI 2021).

    ``forward(x_enc, x_mark_enc, x_dec, x_mark_dec)``:
        x_enc ``[B, seq_len, enc_in]``, x_mark_enc ``[B, seq_len, M]``,
        x_dec ``[B, label_len + pred_len, dec_in]``, x_mark_dec ``[B, label_len + pred_len, M]``
        -> ``[B, pred_len, c_out]``; with ``cfg.output_attention`` also a dict of attention maps
        ``{"encoder": [...], "decoder_self": [...], "decoder_cross": [...]}``, one ``[B, H, L_Q, L_K]``
        tensor per layer (the decoder's last layer has ``pred_len`` query rows in cross-attention).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg.validate()
        self.pred_len = cfg.pred_len
        self.output_attention = cfg.output_attention
        self.enc_embedding = DataEmbedding(cfg.enc_in, cfg)
        self.dec_embedding = DataEmbedding(cfg.dec_in, cfg)
        self.encoder: nn.Module = self._build_encoder(cfg)
        self.decoder = build_decoder(cfg)
        self.projection = nn.Linear(cfg.d_model, cfg.c_out)

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
        enc_out, enc_maps = self.encoder(self.enc_embedding(x_enc, x_mark_enc))  # [B, L_E, d_model]
        dec_out, self_maps, cross_maps = self.decoder(
            self.dec_embedding(x_dec, x_mark_dec), enc_out,
            keep_last=self.pred_len if trim_decoder else None,
        )  # [B, pred_len (or L_D), d_model]
        out = self.projection(dec_out[:, -self.pred_len:])  # [B, pred_len, c_out]
        if self.output_attention:
            return out, {"encoder": enc_maps, "decoder_self": self_maps, "decoder_cross": cross_maps}
        return out


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
