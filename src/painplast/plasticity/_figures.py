"""Figure layouts the modules' group stages share (PNG bytes for ``GroupResult.figures``)."""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from ..results import figure_png

__all__ = ["small_multiples"]


def small_multiples(items: Sequence[Any], draw: Callable[[Any, Any], None], xlabel: str,
                    ylabel: str, *, ncol: int = 4, panel: tuple[float, float] = (3.0, 2.4),
                    sharex: bool = False) -> bytes:
    """One small panel per item, ``ncol`` to a row, with common axis labels and a legend.

    Parameters
    ----------
    items : sequence
        What each panel shows (a region, a feature ...).
    draw : callable
        ``draw(ax, item)`` draws one panel; the labels of the first panel's artists make the
        legend.
    xlabel, ylabel : str
        Labels of the whole figure.
    ncol : int
        Panels per row.
    panel : (float, float)
        Width and height of one panel (inches).
    sharex : bool
        One x axis for all panels.

    Returns
    -------
    bytes
        PNG image.

    Examples
    --------
    >>> png = small_multiples(["a", "b"], lambda ax, item: ax.plot([0, 1], label=item), "x", "y")
    >>> png[:4]
    b'\\x89PNG'
    """
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    nrow = int(np.ceil(len(items) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(panel[0] * ncol, panel[1] * nrow), sharex=sharex,
                             squeeze=False)
    for ax, item in zip(axes.ravel(), items):
        draw(ax, item)
    for ax in axes.ravel()[len(items):]:
        ax.set_visible(False)
    axes[0, 0].legend(fontsize=7)
    fig.supxlabel(xlabel)
    fig.supylabel(ylabel)
    fig.tight_layout()
    return figure_png(fig)
