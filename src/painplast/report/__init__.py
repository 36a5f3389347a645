"""The report: one self-contained ``report.html`` per output folder (see :mod:`.html`).

:func:`write_report` writes it from an output folder after the group stage (its docstring has
a complete example); :func:`render_report` returns the HTML text.
"""
from .html import render_report, write_report

__all__ = ["write_report", "render_report"]
