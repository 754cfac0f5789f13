"""Figures for people: orthoviews and summaries."""

from vemrestore.report.orthoview import save_orthoview

__all__ = ["save_orthoview"]
