"""Figures and pages for people: orthoviews, PNG text for JSON results, the HTML report."""

from vemrestore.report._html import write_report
from vemrestore.report._images import decode_png, encode_png
from vemrestore.report.orthoview import save_orthoview

__all__ = ["decode_png", "encode_png", "save_orthoview", "write_report"]
