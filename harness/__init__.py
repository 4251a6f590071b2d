"""Reproducibility harness for multi-label image classification (Q2L, MLSPL, ASL)."""
__version__ = "0.1.0"
