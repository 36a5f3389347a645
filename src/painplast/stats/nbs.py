"""Network-based statistic (NBS) with permutations vectorized over a chunk at a time.

The NBS (Zalesky, Fornito & Bullmore 2010) controls the family-wise error rate over the edges of
a connectome: a t statistic per edge is thresholded, the supra-threshold edges form a graph, and
each connected component of that graph is tested against the permutation distribution of the
largest component.

This implementation follows ``bct.nbs_bct`` (bctpy) wherever both apply, so that the two agree on
the same input:

- edges are the upper triangle of the ``(n_nodes, n_nodes)`` matrix in row-major order
  (``np.triu_indices(n_nodes, 1)``); the lower triangle is ignored;
- the edge statistic is the pooled-variance two-sample t of ``x - y`` (a constant edge, or an edge
  with zero within-group variance, gets ``t = 0`` as in bctpy);
- ``tail='right'`` tests ``x > y``, ``'left'`` tests ``x < y`` and ``'both'`` uses ``|t|``; an edge
  is supra-threshold when the oriented statistic is strictly greater than ``threshold``;
- a component's size is its number of supra-threshold edges; components have at least one edge;
- given the same permutations (``permutations=``, e.g. those ``bct.nbs_bct(..., seed=s)`` draws
  from ``RandomState(s)``), the null distributions are identical permutation by permutation.
  Otherwise the permutations come from painplast's one drawer,
  :func:`painplast.stats.permutation.draw_permutations` (a ``numpy.random.Generator``).

The FWE p-value differs on purpose: bctpy reports ``#{null >= size} / k``, which can be 0; here it
is ``(1 + #{null >= size}) / (1 + k)``, the valid permutation p-value (the observed labelling is
one of the permutations). The two agree within Monte-Carlo error.

Beyond bctpy, :func:`nbs` takes a general linear model (design matrix and t contrast, e.g. group
with age, sex, site and mean framewise displacement as covariates) tested with Freedman–Lane
permutation, exchangeability blocks (permutation within site), and component size measured as
intensity.

Speed: for a chunk of permutations the numerators of all t statistics are one matrix product
``(chunk, n_subjects) @ (n_subjects, n_edges)`` of permuted regressors with the residualized edge
data, the residual sums of squares follow from the same product, and the components of all
supra-threshold graphs of the chunk come from one call of
:func:`scipy.sparse.csgraph.connected_components` on their block-diagonal union.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import linalg
from scipy import sparse
from scipy.sparse import csgraph

from painplast.errors import InputError
from painplast.stats.permutation import current_executor, draw_permutations, split_aligned

__all__ = ["NBSComponent", "NBSResult", "nbs", "edge_t_statistic"]

_TAILS = ("both", "right", "left")
_SIZES = ("extent", "intensity")
# A residual sum of squares at or below this fraction of the nuisance-model residual sum of
# squares counts as zero variance (bctpy returns t = 0 there, and so do we).
_DEGENERATE_RSS = 1e-10
# Elements of one (chunk, n_edges) float64 work array when chunk_size is not given (8 MB):
# small enough to stay cache-friendly, large enough for an efficient matrix product.
_CHUNK_ELEMENTS = 1_000_000


@dataclass(frozen=True)
class NBSComponent:
    """One connected component of supra-threshold edges.

    Parameters
    ----------
    nodes : ndarray of int, shape (n_component_nodes,)
        Node indices, ascending.
    edges : ndarray of int, shape (n_component_edges, 2)
        Supra-threshold edges ``(i, j)`` with ``i < j``, in upper-triangle order.
    size : float
        Number of edges (``size='extent'``) or the sum of ``statistic - threshold`` over the edges
        (``size='intensity'``).
    p_fwe : float
        Family-wise error corrected p-value of the component.
    """

    nodes: np.ndarray
    edges: np.ndarray
    size: float
    p_fwe: float


@dataclass(frozen=True)
class NBSResult:
    """Result of :func:`nbs`.

    Parameters
    ----------
    t_statistic : ndarray of float64, shape (n_edges,)
        Signed edge t statistic (``x - y`` for two groups, the contrast for a design), edges in
        upper-triangle order (see ``edge_index``).
    edge_index : ndarray of int, shape (n_edges, 2)
        Node pair ``(i, j)``, ``i < j``, of each edge.
    supra_threshold : ndarray of bool, shape (n_nodes, n_nodes)
        Symmetric adjacency of the supra-threshold edges.
    components : tuple of NBSComponent
        Components with at least one edge, largest first (ties: smallest first node).
    p_fwe : ndarray of float64, shape (n_components,)
        FWE-corrected p-value of each component, in the order of ``components``.
    null_distribution : ndarray of float64, shape (n_permutations,)
        Largest component size of each permutation (0 when a permutation has no
        supra-threshold edge).
    threshold : float
        Primary threshold on the oriented edge statistic.
    tail : {'both', 'right', 'left'}
        Alternative hypothesis.
    size : {'extent', 'intensity'}
        How component size is measured.
    """

    t_statistic: np.ndarray
    edge_index: np.ndarray
    supra_threshold: np.ndarray
    components: tuple
    p_fwe: np.ndarray
    null_distribution: np.ndarray
    threshold: float
    tail: str
    size: str

    @property
    def n_nodes(self) -> int:
        """Number of nodes."""
        return self.supra_threshold.shape[0]

    @property
    def t_matrix(self) -> np.ndarray:
        """Symmetric ``(n_nodes, n_nodes)`` matrix of edge t statistics (zero diagonal)."""
        out = np.zeros((self.n_nodes, self.n_nodes))
        i, j = self.edge_index.T
        out[i, j] = self.t_statistic
        out[j, i] = self.t_statistic
        return out

    @property
    def component_labels(self) -> np.ndarray:
        """``(n_nodes, n_nodes)`` int matrix: ``k + 1`` on the edges of component ``k``, else 0.

        The same encoding as the ``adj`` output of ``bct.nbs_bct`` (its component numbering
        may differ).
        """
        out = np.zeros((self.n_nodes, self.n_nodes), dtype=int)
        for k, component in enumerate(self.components):
            i, j = component.edges.T
            out[i, j] = k + 1
            out[j, i] = k + 1
        return out


def nbs(x: ArrayLike, y: ArrayLike | None = None, *, design: ArrayLike | None = None,
        contrast: ArrayLike | None = None, threshold: float = 3.0, tail: str = "both",
        n_permutations: int = 1000, size: str = "extent", blocks: ArrayLike | None = None,
        random_state: int | np.random.Generator | None = 0,
        permutations: ArrayLike | None = None, chunk_size: int | None = None) -> NBSResult:
    """Network-based statistic for two groups or a t contrast of a general linear model.

    Parameters
    ----------
    x : array_like, shape (n_nodes, n_nodes, n_subjects) or (n_subjects, n_edges)
        Connectivity matrices of the first group (with ``y``) or of all participants (with
        ``design``), as in bctpy; or their upper-triangle edge vectors in
        ``np.triu_indices(n_nodes, 1)`` order. Only the upper triangle of a matrix is read.
    y : array_like, shape (n_nodes, n_nodes, n_subjects_y) or (n_subjects_y, n_edges), optional
        Connectivity of the second group. Give either ``y`` or ``design`` and ``contrast``.
    design : array_like, shape (n_subjects, n_regressors), optional
        Design matrix of full column rank, including the intercept column if wanted.
    contrast : array_like, shape (n_regressors,), optional
        t contrast over the columns of ``design``.
    threshold : float
        Primary threshold: an edge is supra-threshold when its oriented t statistic is strictly
        greater than this.
    tail : {'both', 'right', 'left'}
        ``'right'``: ``x > y`` (positive contrast); ``'left'``: ``x < y``; ``'both'``: ``|t|``.
    n_permutations : int
        Number of permutations (>= 1).
    size : {'extent', 'intensity'}
        Component size: number of edges, or the sum of ``statistic - threshold`` over its edges
        (the NBS toolbox's intensity).
    blocks : array_like, shape (n_subjects,), optional
        Exchangeability blocks (e.g. site labels): subjects are permuted within blocks only.
    random_state : int, numpy.random.Generator or None
        Seed of the permutations (:func:`painplast.stats.permutation.draw_permutations`). None is
        not reproducible.
    permutations : array_like of int, shape (n_permutations, n_subjects), optional
        The permutations to use instead of drawing them: row ``j`` orders the subjects of
        permutation ``j`` (e.g. the same permutations for several contrasts, or another tool's).
    chunk_size : int, optional
        Permutations per vectorized chunk; by default about 8 MB per work array.

    Returns
    -------
    NBSResult
        Edge t statistics, supra-threshold adjacency, components with FWE p-values and the
        null distribution of the largest component size.

    Notes
    -----
    With ``design``, permutation follows Freedman & Lane (1983): the data are residualized on the
    nuisance part of the model (the columns of ``design @ null_space(contrast)``), the residuals
    are permuted and added back to the nuisance fit, and the full model is refitted. For two
    groups without covariates this is the same as permuting the group labels, as bctpy does.

    The FWE p-value of a component of size ``s`` is ``(1 + #{null >= s}) / (1 + n_permutations)``
    (bctpy reports ``#{null >= s} / n_permutations``, which can be 0). Unlike bctpy, no
    supra-threshold edge is not an error: the result then has no components.

    Examples
    --------
    >>> import numpy as np
    >>> from painplast.stats.nbs import nbs
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(8, 8, 12))
    >>> y = rng.normal(size=(8, 8, 12))
    >>> x[0, 1:4, :] += 2.0                      # plant edges (0, 1), (0, 2), (0, 3)
    >>> result = nbs(x, y, threshold=3.0, n_permutations=200, random_state=1)
    >>> [c.nodes.tolist() for c in result.components]
    [[0, 1, 2, 3]]
    >>> result.components[0].size, bool(result.p_fwe[0] < 0.05)
    (3.0, True)
    """
    if tail not in _TAILS:
        raise InputError(f"tail must be one of {_TAILS}, got {tail!r}")
    if size not in _SIZES:
        raise InputError(f"size must be one of {_SIZES}, got {size!r}")
    n_permutations = int(n_permutations)
    if n_permutations < 1:
        raise InputError(f"n_permutations must be at least 1, got {n_permutations}")
    threshold = float(threshold)

    if y is not None:
        if design is not None or contrast is not None:
            raise InputError("give either y (two groups) or design and contrast, not both")
        data_x, n_nodes = _edge_data(x, "x")
        data_y, n_nodes_y = _edge_data(y, "y")
        if n_nodes_y != n_nodes:
            raise InputError(f"x has {n_nodes} nodes but y has {n_nodes_y}")
        data = np.concatenate([data_x, data_y], axis=0)
        n_x, n_y = len(data_x), len(data_y)
        design = np.column_stack([np.ones(n_x + n_y), np.r_[np.ones(n_x), np.zeros(n_y)]])
        contrast = np.array([0.0, 1.0])
    else:
        if design is None or contrast is None:
            raise InputError("give y (second group) or both design and contrast")
        data, n_nodes = _edge_data(x, "x")
    model = _Model(design, contrast, data)

    order = np.triu_indices(n_nodes, 1)
    edge_index = np.column_stack(order)
    t_obs = model.observed_t()
    stat_obs = _oriented(t_obs, tail)
    supra = stat_obs > threshold
    weights = stat_obs - threshold if size == "intensity" else None
    labels_obs, sizes_obs = _components(supra, weights, order, n_nodes)

    if permutations is None:
        if blocks is not None and np.asarray(blocks).size != model.n_subjects:
            raise InputError(f"blocks must have one label per subject ({model.n_subjects}), "
                             f"got {np.asarray(blocks).size}")
        permutations, _ = draw_permutations(model.n_subjects, n_permutations, blocks=blocks,
                                            random_state=random_state)
    permutations = np.asarray(permutations, dtype=np.intp)
    if permutations.shape != (n_permutations, model.n_subjects):
        raise InputError(f"permutations have shape {permutations.shape}, expected "
                         f"({n_permutations}, {model.n_subjects})",
                         fix="give one row of subject indices per permutation")
    if chunk_size is None:
        chunk_size = max(1, _CHUNK_ELEMENTS // data.shape[1])
    chunk_size = int(chunk_size)
    if chunk_size < 1:
        raise InputError(f"chunk_size must be at least 1, got {chunk_size}")
    setting = current_executor()
    parts = split_aligned(n_permutations, setting[1] if setting else 1, chunk_size)
    tasks = [_NullTask(model, permutations[part], tail, threshold, size, n_nodes, chunk_size) for part in parts]
    results = list(setting[0](_null_sizes, tasks)) if setting and len(tasks) > 1 else [_null_sizes(t) for t in tasks]
    null = np.concatenate(results)

    components = []
    for k in range(len(sizes_obs)):
        edges = edge_index[labels_obs == k]
        p = (1.0 + np.count_nonzero(null >= sizes_obs[k])) / (1.0 + n_permutations)
        components.append(NBSComponent(nodes=np.unique(edges), edges=edges,
                                       size=float(sizes_obs[k]), p_fwe=float(p)))
    components.sort(key=lambda c: (-c.size, c.nodes[0]))
    adjacency = np.zeros((n_nodes, n_nodes), dtype=bool)
    adjacency[order[0][supra], order[1][supra]] = True
    adjacency |= adjacency.T
    return NBSResult(
        t_statistic=t_obs, edge_index=edge_index, supra_threshold=adjacency,
        components=tuple(components), p_fwe=np.array([c.p_fwe for c in components]),
        null_distribution=null, threshold=threshold, tail=tail, size=size)


@dataclass(frozen=True)
class _NullTask:
    """Some permutations of one NBS (picklable: sent to another process or a dask worker)."""

    model: "_Model"
    permutations: np.ndarray
    tail: str
    threshold: float
    size: str
    n_nodes: int
    chunk_size: int


def _null_sizes(task: _NullTask) -> np.ndarray:
    """Largest component size of each permutation of ``task`` (pure function)."""
    order = np.triu_indices(task.n_nodes, 1)
    null = np.empty(len(task.permutations))
    for start in range(0, len(task.permutations), task.chunk_size):
        stop = min(start + task.chunk_size, len(task.permutations))
        stat = _oriented(task.model.permuted_t(task.permutations[start:stop]), task.tail)
        mask = stat > task.threshold
        w = stat - task.threshold if task.size == "intensity" else None
        null[start:stop] = _max_component_sizes(mask, w, order, task.n_nodes)
    return null


def edge_t_statistic(data: ArrayLike, design: ArrayLike, contrast: ArrayLike) -> np.ndarray:
    """t statistic of a contrast of a least-squares fit, for every column of ``data``.

    Parameters
    ----------
    data : array_like, shape (n_subjects, n_edges)
        One column per edge (or any other response).
    design : array_like, shape (n_subjects, n_regressors)
        Design matrix of full column rank.
    contrast : array_like, shape (n_regressors,)
        t contrast.

    Returns
    -------
    ndarray of float64, shape (n_edges,)
        ``c'b / se(c'b)``; 0 where the residual variance is zero (as bctpy).

    Examples
    --------
    >>> import numpy as np
    >>> design = np.column_stack([np.ones(6), [1, 1, 1, 0, 0, 0]])
    >>> data = np.array([[1.0], [2.0], [3.0], [0.0], [1.0], [2.0]])
    >>> edge_t_statistic(data, design, [0, 1]).round(4)
    array([1.2247])
    """
    data = np.asarray(data, dtype=np.float64)
    if data.ndim != 2:
        raise InputError(f"data must be 2-D (n_subjects, n_edges), got shape {data.shape}")
    return _Model(design, contrast, data).observed_t()


class _Model:
    """Freedman–Lane decomposition of a design for one t contrast.

    ``data`` is ``(n_subjects, n_edges)``. The nuisance space is ``Z = design @ null(c')``;
    ``x_r`` is the effect regressor ``design @ c / (c'c)`` residualized on ``Z``, so that its
    coefficient in the model ``[x_r, Z]`` equals ``c'b``.
    """

    def __init__(self, design, contrast, data):
        design = np.asarray(design, dtype=np.float64)
        contrast = np.asarray(contrast, dtype=np.float64).ravel()
        self.data = data
        n, n_edges = data.shape
        if design.ndim != 2 or design.shape[0] != n:
            raise InputError(f"design must have shape (n_subjects={n}, n_regressors), "
                             f"got {design.shape}")
        if contrast.shape != (design.shape[1],):
            raise InputError(f"contrast must have {design.shape[1]} entries (one per design "
                             f"column), got {contrast.size}")
        if not np.all(np.isfinite(design)) or not np.any(contrast):
            raise InputError("design must be finite and contrast must not be all zero")
        if np.linalg.matrix_rank(design) < design.shape[1]:
            raise InputError("design matrix is rank deficient",
                             fix="drop collinear columns (e.g. a site dummy next to the intercept)")
        self.df = n - design.shape[1]
        if self.df < 1:
            raise InputError(f"{n} subjects leave no residual degrees of freedom for "
                             f"{design.shape[1]} regressors")
        self.n_subjects = n
        self.design = design
        self.contrast = contrast

        nonzero = np.flatnonzero(contrast)
        if nonzero.size == 1:  # exact nuisance columns: keeps the intercept bit-exact
            nuisance = np.delete(design, nonzero[0], axis=1)
        else:
            nuisance = design @ linalg.null_space(contrast[None, :])
        self.nuisance = nuisance
        if nuisance.shape[1]:
            q_z, _ = np.linalg.qr(nuisance)
        else:
            q_z = np.zeros((n, 0))
        self.q_z = q_z
        effect = design @ contrast / (contrast @ contrast)
        self.x_r = effect - q_z @ (q_z.T @ effect)
        self.ss_x = float(self.x_r @ self.x_r)
        # residuals of the nuisance model, permuted under Freedman–Lane
        self.resid_z = data - q_z @ (q_z.T @ data)
        self.ss_z = np.einsum("ij,ij->j", self.resid_z, self.resid_z)

    def observed_t(self) -> np.ndarray:
        """Edge t of the unpermuted data, from a QR least-squares fit (numerically careful)."""
        q, r = np.linalg.qr(self.design)
        beta = linalg.solve_triangular(r, q.T @ self.data)
        resid = self.data - self.design @ beta
        rss = np.einsum("ij,ij->j", resid, resid)
        r_inv_c = linalg.solve_triangular(r, self.contrast, trans="T")
        var_c = float(r_inv_c @ r_inv_c)  # c' (X'X)^-1 c
        return self._t(self.contrast @ beta, rss, var_c)

    def permuted_t(self, perms: np.ndarray) -> np.ndarray:
        """Edge t for each row of ``perms`` (shape (n_perm, n_subjects)): (n_perm, n_edges).

        Row ``b`` refits the model to ``P_b e + H_z y`` with ``(P_b e)[i] = e[perms[b, i]]``.
        With ``A[b, perms[b, i]] = x_r[i]`` the numerators ``x_r' P_b e`` are ``A @ e``; the
        residual sum of squares is ``|e|^2 - |Q_z' P_b e|^2 - (x_r' P_b e)^2 / x_r'x_r``, and the
        middle term vanishes when the permutations leave the nuisance columns unchanged
        (intercept only, or site dummies permuted within site).
        """
        n_perm = len(perms)
        rows = np.arange(n_perm)[:, None]
        scatter = np.empty((n_perm, self.n_subjects))
        scatter[rows, perms] = self.x_r
        numerator = scatter @ self.resid_z
        rss = numerator * numerator
        rss *= -1.0 / self.ss_x
        rss += self.ss_z
        moved = self.nuisance[perms]  # (n_perm, n_subjects, n_nuisance)
        if moved.size and not np.all(moved == self.nuisance):
            for k in range(self.q_z.shape[1]):
                scatter[rows, perms] = self.q_z[:, k]
                proj = scatter @ self.resid_z
                proj *= proj
                rss -= proj
        return self._t(numerator / self.ss_x, rss, 1.0 / self.ss_x)

    def _t(self, estimate, rss, var_c):
        """``estimate / sqrt(rss / df * var_c)``; 0 where the residual variance vanishes."""
        degenerate = rss <= _DEGENERATE_RSS * self.ss_z
        rss = np.where(degenerate, 1.0, rss)
        t = estimate / np.sqrt(rss * (var_c / self.df))
        t[degenerate] = 0.0
        return t


def _edge_data(x, name: str):
    """Connectivity matrices or edge vectors -> ``(n_subjects, n_edges)`` float64, n_nodes."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 3:
        n_nodes = x.shape[0]
        if x.shape[1] != n_nodes:
            raise InputError(f"{name} must be (n_nodes, n_nodes, n_subjects), got {x.shape}")
        i, j = np.triu_indices(n_nodes, 1)
        data = np.ascontiguousarray(x[i, j, :].T)
    elif x.ndim == 2:
        data = np.ascontiguousarray(x)
        n_edges = data.shape[1]
        n_nodes = int(round((1 + np.sqrt(1 + 8 * n_edges)) / 2))
        if n_nodes * (n_nodes - 1) // 2 != n_edges or n_edges == 0:
            raise InputError(f"{name} has {n_edges} columns, which is not n_nodes*(n_nodes-1)/2 "
                             "upper-triangle edges of any graph")
    else:
        raise InputError(f"{name} must be (n_nodes, n_nodes, n_subjects) matrices or "
                         f"(n_subjects, n_edges) edge vectors, got shape {x.shape}")
    if not np.all(np.isfinite(data)):
        raise InputError(f"{name} has non-finite connectivity values",
                         fix="drop or impute subjects with missing edges")
    if n_nodes < 2:
        raise InputError(f"{name} needs at least 2 nodes")
    return data, n_nodes


def _oriented(t: np.ndarray, tail: str) -> np.ndarray:
    if tail == "both":
        return np.abs(t)
    if tail == "left":
        return -t
    return t


def _components(supra: np.ndarray, weights, order, n_nodes: int):
    """Components of one supra-threshold graph.

    Returns the component number of every edge (``-1`` below threshold), shape (n_edges,), and
    the size of each component, shape (n_components,), numbered by first appearance in edge
    order.
    """
    edges = np.flatnonzero(supra)
    labels = np.full(supra.shape, -1)
    if edges.size == 0:
        return labels, np.zeros(0)
    i, j = order[0][edges], order[1][edges]
    graph = sparse.coo_matrix((np.ones(edges.size), (i, j)), shape=(n_nodes, n_nodes))
    _, node_label = csgraph.connected_components(graph, directed=False)
    _, first, edge_label = np.unique(node_label[i], return_index=True, return_inverse=True)
    renumber = np.argsort(np.argsort(first))  # number components by their first edge
    edge_label = renumber[edge_label]
    labels[edges] = edge_label
    w = None if weights is None else weights[edges]
    return labels, np.bincount(edge_label, weights=w)


def _max_component_sizes(mask: np.ndarray, weights, order, n_nodes: int) -> np.ndarray:
    """Largest component size of each row of ``mask`` (n_graphs, n_edges) -> (n_graphs,).

    All graphs are put into one block-diagonal graph (graph ``b`` owns nodes
    ``b * n_nodes ... (b + 1) * n_nodes - 1``) and labelled by one connected-components call.
    """
    n_graphs = mask.shape[0]
    out = np.zeros(n_graphs)
    graph_of_edge, edge = np.nonzero(mask)
    if edge.size == 0:
        return out
    offset = graph_of_edge * n_nodes
    u = offset + order[0][edge]
    v = offset + order[1][edge]
    n_total = n_graphs * n_nodes
    graph = sparse.csr_matrix((np.ones(edge.size, dtype=np.int8), (u, v)),
                              shape=(n_total, n_total))
    n_labels, node_label = csgraph.connected_components(graph, directed=False)
    edge_label = node_label[u]
    w = None if weights is None else weights[graph_of_edge, edge]
    sizes = np.bincount(edge_label, weights=w, minlength=n_labels)
    graph_of_label = np.zeros(n_labels, dtype=np.intp)
    graph_of_label[edge_label] = graph_of_edge
    np.maximum.at(out, graph_of_label, sizes)
    return out
