"""The report: one self-contained ``report.html`` per output folder (see :mod:`.html`).

Examples
--------
>>> from painplast.report import write_report
>>> write_report("out")   # doctest: +SKIP
PosixPath('out/report.html')
"""
from .html import render_report, write_report

__all__ = ["write_report", "render_report"]
