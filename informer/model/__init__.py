"""The Informer network: embeddings, attention (full, ProbSparse, FAVOR+), encoder, decoder."""

from informer.model.attention import AttentionCore, AttentionLayer, FullAttention, build_attention
from informer.model.favor import FavorAttention
from informer.model.informer import Informer, InformerStack, build_model
from informer.model.probsparse import ProbAttention

__all__ = ["AttentionCore", "AttentionLayer", "FavorAttention", "FullAttention", "Informer",
           "InformerStack", "ProbAttention", "build_attention", "build_model"]
