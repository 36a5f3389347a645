"""HTML building blocks of the report: escaped text, tags, tables and embedded figures.

Every piece of text that reaches the page goes through :func:`esc` (directly or through
:func:`tag`/:func:`table`), so report text is always escaped; :class:`Markup` marks what is
already safe. Shared by :mod:`painplast.report.html` and the report's section modules.
"""
from __future__ import annotations

import base64
import html
from typing import Iterable

import numpy as np
import pandas as pd

__all__ = ["Markup", "esc", "join", "tag", "image", "number", "p_text", "table"]


class Markup(str):
    """A string that is already safe HTML (made only by :func:`esc`, :func:`tag`, :func:`join`)."""


def esc(value) -> Markup:
    """HTML-escape ``value`` (any object, via ``str``) unless it is already :class:`Markup`.

    Examples
    --------
    >>> esc("<script>alert(1)</script>")
    '&lt;script&gt;alert(1)&lt;/script&gt;'
    """
    if isinstance(value, Markup):
        return value
    return Markup(html.escape(str(value), quote=True))


def join(parts: Iterable) -> Markup:
    """Concatenate parts, escaping those that are not :class:`Markup`."""
    return Markup("".join(esc(p) for p in parts if p is not None))


def tag(name: str, *children, **attrs) -> Markup:
    """``<name attr="...">children</name>``; text children and attribute values are escaped.

    ``class_`` gives the ``class`` attribute; an attribute whose value is None is left out.

    Examples
    --------
    >>> tag("td", "<b>", class_="x")
    '<td class="x">&lt;b&gt;</td>'
    """
    attributes = "".join(f' {k.rstrip("_").replace("_", "-")}="{esc(v)}"'
                         for k, v in attrs.items() if v is not None)
    if name in ("img", "br", "meta", "hr"):
        return Markup(f"<{name}{attributes}>")
    return Markup(f"<{name}{attributes}>{join(children)}</{name}>")


def image(data: bytes | None, alt: str, caption: str | None = None) -> Markup:
    """An embedded PNG (base64 data URI) in a figure with its caption; empty if no PNG."""
    if not data or not data.startswith(b"\x89PNG"):
        return Markup("")
    src = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    return tag("figure", tag("img", src=src, alt=alt), tag("figcaption", caption) if caption else None)


def number(value, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, (bool, np.bool_)):
        return str(value)
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    if not np.isfinite(v):
        return "n/a"
    if v == int(v) and abs(v) < 1e6:
        return str(int(v))
    if abs(v) < 1e-3:
        return f"{v:.1e}"
    return f"{v:.{digits}g}" if abs(v) < 1 else f"{v:.{digits}f}".rstrip("0").rstrip(".")


def p_text(value) -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "n/a"
    if not np.isfinite(v):
        return "n/a"
    return "< 0.001" if v < 0.001 else f"{v:.3f}"


def table(frame: pd.DataFrame, max_rows: int | None = None, highlight=None, caption: str | None = None) -> Markup:
    """A DataFrame as an HTML table (every cell escaped).

    Parameters
    ----------
    frame : DataFrame
    max_rows : int, optional
        Rows beyond this are left out (the caption says how many).
    highlight : array_like of bool, optional
        Rows drawn emphasized (e.g. significant after correction).
    caption : str, optional

    Returns
    -------
    Markup
    """
    n = len(frame)
    shown = frame if max_rows is None or n <= max_rows else frame.head(max_rows)
    flags = list(highlight)[:len(shown)] if highlight is not None else [False] * len(shown)
    head = tag("tr", *[tag("th", c) for c in shown.columns])
    rows = []
    for flag, (_, row) in zip(flags, shown.iterrows()):
        cells = []
        for col, value in row.items():
            text = p_text(value) if str(col) in ("p", "p_corrected", "p_fwe", "permutation p") else (
                value if isinstance(value, str) else number(value))
            cells.append(tag("td", text))
        rows.append(tag("tr", *cells, class_="sig" if flag else None))
    note = caption or ""
    if len(shown) < n:
        note = f"{note} (first {len(shown)} of {n} rows)".strip()
    return tag("table", tag("caption", note) if note else None, tag("thead", head), tag("tbody", *rows))
