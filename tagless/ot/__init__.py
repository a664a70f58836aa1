"""Optimal transport: Sinkhorn-Knopp for equipartitioned self-labels (SeLa) and SwAV codes."""

from tagless.ot.sinkhorn import SinkhornResult, sinkhorn

__all__ = ["SinkhornResult", "sinkhorn"]
