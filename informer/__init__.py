"""Informer: long-sequence time-series forecasting (Zhou et al., AAAI 2021)."""

__version__ = "0.1.0"
