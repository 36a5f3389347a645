"""The HTML report: one self-contained page that a clinical researcher reads first.

:func:`write_report` reads a painplast output folder (``docs/architecture.md``, "Outputs") and
writes ``report.html`` beside it: figures are embedded as base64 PNG, the styles are inline, and
there is no script and no link to anything outside the file, so it opens offline and can be sent
by e-mail. Sections (their HTML ids are fixed): ``cohort``, ``quality``, one per plasticity
module (``sensitization``, ``reorganization``, ``connectivity``, ``structure``,
``modulation`` and any module registered with :func:`painplast.plasticity.register`, titled and
introduced as the module declares), ``biomarker`` and ``methods``. A module or biomarker without outputs is listed
as absent, never filled in.

Every text that comes from data (participant IDs, table cells, notes, reasons) passes through
:func:`esc`; markup is built only with :func:`tag`, which escapes its text children and
attribute values, so a value such as ``<script>`` shows as text.
"""
from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pandas as pd

from .. import __version__, plasticity
from ..derivatives import Derivatives, atomic_write_text
from ..errors import InputError
from . import figures as figs
from .markup import Markup, esc, image, join, table, tag
from .markup import number as _number
from .markup import p_text as _p

__all__ = ["write_report", "render_report", "esc", "tag", "Markup"]

def section_ids() -> tuple[str, ...]:
    """HTML ids of the sections, in order: one per registered plasticity module between
    ``quality`` and ``biomarker``."""
    return ("cohort", "quality", *plasticity.names(), "biomarker", "methods")


def __getattr__(name: str):
    """``SECTION_IDS``: :func:`section_ids` (modules may be registered after import)."""
    if name == "SECTION_IDS":
        return section_ids()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _category_text(module: str) -> tuple[str, str]:
    """Title and description a module declares (its name alone when it is not installed)."""
    try:
        declaration = plasticity.load(module)
    except Exception:  # a module that fails to import is reported as not available
        declaration = None
    return (declaration.title, declaration.description) if declaration else (module, "")


CITATIONS = (
    "Gorgolewski KJ et al. (2016). The brain imaging data structure. Sci Data 3:160044.",
    "Esteban O et al. (2019). fMRIPrep: a robust preprocessing pipeline for functional MRI. "
    "Nat Methods 16:111-116.",
    "Abraham A et al. (2014). Machine learning for neuroimaging with scikit-learn (nilearn). "
    "Front Neuroinform 8:14.",
    "Pedregosa F et al. (2011). Scikit-learn: machine learning in Python. JMLR 12:2825-2830.",
    "Smith SM, Nichols TE (2009). Threshold-free cluster enhancement. NeuroImage 44:83-98.",
    "Winkler AM et al. (2014). Permutation inference for the general linear model. "
    "NeuroImage 92:381-397.",
    "Zalesky A, Fornito A, Bullmore ET (2010). Network-based statistic. NeuroImage 53:1197-1207.",
    "Fortin JP et al. (2018). Harmonization of cortical thickness measurements across scanners "
    "and sites (ComBat). NeuroImage 167:104-120.",
    "McLaren DG et al. (2012). A generalized form of context-dependent psychophysiological "
    "interactions (gPPI). NeuroImage 61:1277-1286.",
    "Power JD et al. (2012). Spurious but systematic correlations in functional connectivity MRI "
    "networks arise from subject motion. NeuroImage 59:2142-2154.",
    "Holm S (1979). A simple sequentially rejective multiple test procedure. Scand J Stat 6:65-70.",
    "Wager TD et al. (2013). An fMRI-based neurologic signature of physical pain. "
    "N Engl J Med 368:1388-1397.",
    "Varoquaux G (2018). Cross-validation failure: small sample sizes lead to large error bars. "
    "NeuroImage 180:68-77.",
)


# --------------------------------------------------------------------------------------------
# a tiny safe templating helper
# --------------------------------------------------------------------------------------------

# --------------------------------------------------------------------------------------------
# reading the output folder
# --------------------------------------------------------------------------------------------

def _read_tsv(path: Path) -> pd.DataFrame | None:
    try:
        return pd.read_csv(path, sep="\t", na_values="n/a", keep_default_na=False)
    except (OSError, ValueError):
        return None


def _read_json(path: Path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


class _Output:
    """What the report needs from an output folder, read once."""

    def __init__(self, root: Path):
        self.root = root
        self.deriv = Derivatives(root)
        self.description = _read_json(root / "dataset_description.json") or {}
        self.source = self._source()
        self.participants = self._participants()
        self.failures = self.deriv.failures()
        self.modules = plasticity.names()
        self.notes = {m: _read_json(root / "group" / f"{m}_notes.json") for m in self.modules}
        self.features, self.info, self.runs = {}, {}, {}
        for module in self.modules:
            self.features[module], self.info[module] = self._subject_tables(module)

    def _source(self) -> Path | None:
        for source in self.description.get("SourceDatasets", []) or []:
            url = source.get("URL", "") if isinstance(source, dict) else ""
            parsed = urlparse(url)
            if parsed.scheme == "file":
                path = Path(unquote(parsed.path))
                if (path / "participants.tsv").exists():
                    return path
        return None

    def _participants(self) -> pd.DataFrame:
        if self.source is not None:
            t = pd.read_csv(self.source / "participants.tsv", sep="\t", na_values=["n/a", ""],
                            keep_default_na=False, dtype={"participant_id": str})
            if "group" in t:
                t["group"] = t["group"].str.lower()
            return t.set_index("participant_id")
        ids = sorted(p.name for p in self.root.glob("sub-*") if p.is_dir())
        return pd.DataFrame(index=pd.Index(ids, name="participant_id"))

    def _sidecars(self, module: str) -> list[Path]:
        return (sorted(self.root.glob(f"sub-*/sub-*_desc-{module}_features.json"))
                + sorted(self.root.glob(f"sub-*/ses-*/sub-*_desc-{module}_features.json")))

    def _subject_tables(self, module: str) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Features and sidecar info per participant (of the session the group statistics used,
        else the earliest written), and every participant-session's runs (``self.runs``)."""
        rows, info, runs = {}, {}, []
        used = (self.notes.get(module) or {}).get("sessions") or {}
        for side in self._sidecars(module):
            meta = _read_json(side)
            tsv = _read_tsv(side.with_suffix(".tsv"))
            if meta is None or tsv is None or tsv.empty:
                continue
            pid, ses = meta.get("participant_id"), meta.get("session")
            runs.append({"participant_id": pid, "session": ses or "",
                         "runs used": ", ".join(meta.get("runs") or []) or "(no functional run)",
                         "in group statistics": "yes" if pid in used and used[pid] == ses else
                         ("no" if pid in used or used else "")})
            if pid in rows and not (pid in used and used[pid] == ses):
                continue
            rows[pid] = tsv.iloc[0].drop(labels=[c for c in ("session_id",) if c in tsv.columns])
            info[pid] = {"participant_id": pid, **{
                k: v for k, v in (meta.get("info") or {}).items() if isinstance(v, (str, int, float, bool))}}
        self.runs[module] = pd.DataFrame(runs, columns=["participant_id", "session", "runs used",
                                                        "in group statistics"])
        feats = pd.DataFrame(list(rows.values())).set_index("participant_id") if rows else pd.DataFrame()
        inf = pd.DataFrame(list(info.values())).set_index("participant_id") if info else pd.DataFrame()
        return feats, inf

    def findings(self, module: str) -> pd.DataFrame | None:
        return _read_tsv(self.root / "group" / f"{module}_findings.tsv")

    def group_files(self, prefix: str, suffix: str) -> list[Path]:
        return sorted((self.root / "group").glob(f"{prefix}*{suffix}"))

    @property
    def config(self) -> dict:
        for notes in self.notes.values():
            if notes and isinstance(notes.get("parameters"), dict) and "config" in notes["parameters"]:
                return notes["parameters"]["config"]
        for side in (sorted(self.root.glob("sub-*/sub-*_features.json"))
                     + sorted(self.root.glob("sub-*/ses-*/sub-*_features.json")))[:1]:
            meta = _read_json(side) or {}
            return (meta.get("parameters") or {}).get("config", {})
        return {}


def _module_status(module: str, out: _Output) -> str:
    """``present``, ``not run`` (installed, no outputs) or ``not available``."""
    if (out.root / "group" / f"{module}_findings.tsv").exists():
        return "present"
    try:
        installed = plasticity.load(module) is not None
    except Exception:  # a module that fails to import is not available either
        installed = False
    return "not run" if installed else "not available"


def _absent(what: str, status: str) -> Markup:
    text = (f"{what}: not run / not available in this version — " +
            ("the module is installed but this output folder has no results for it."
             if status == "not run" else "it is not part of this painplast installation."))
    return tag("p", text, class_="absent")


# --------------------------------------------------------------------------------------------
# sections
# --------------------------------------------------------------------------------------------

def _section(sid: str, title: str, *body) -> Markup:
    return tag("section", tag("h2", title), *body, id=sid)


def _mean_sd(values: pd.Series) -> str:
    v = pd.to_numeric(values, errors="coerce").dropna()
    if v.empty:
        return "n/a"
    return f"{v.mean():.3g} ({v.std(ddof=1):.2g})" if len(v) > 1 else f"{v.mean():.3g}"


def _cohort(out: _Output) -> Markup:
    p = out.participants
    if p.empty:
        return _section("cohort", "Cohort", tag("p", "No participants table was found.", class_="absent"))
    keys = [c for c in ("site", "group") if c in p]
    rows = []
    grouped = p.groupby([p[k].fillna("n/a") for k in keys], sort=True) if keys else [(("all",), p)]
    for key, part in grouped:
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(keys or ["cohort"], key))
        row["n"] = len(part)
        if "age" in p:
            row["age, mean (SD)"] = _mean_sd(part["age"])
        if "sex" in p:
            sex = part["sex"].astype(str).str.upper().str[0]
            row["female"] = f"{int((sex == 'F').sum())}/{len(part)}"
        if "pain_intensity" in p:
            row["pain intensity 0-10"] = _mean_sd(part["pain_intensity"])
        if "pain_duration_months" in p:
            row["pain duration (months)"] = _mean_sd(part["pain_duration_months"])
        if "treatment_response" in p:
            resp = part["treatment_response"].dropna().astype(str)
            row["responders"] = f"{int((resp == 'responder').sum())}/{len(resp)}" if len(resp) else "n/a"
        rows.append(row)
    summary = pd.DataFrame(rows)
    n_sites = p["site"].nunique() if "site" in p else 1
    groups = p["group"].value_counts().to_dict() if "group" in p else {}
    lead = (f"{len(p)} participants from {n_sites} site(s)" +
            (": " + ", ".join(f"{v} {k}s" for k, v in sorted(groups.items())) if groups else "") + ".")
    return _section("cohort", "Cohort", tag("p", lead), table(summary, caption="Participants by site and group"),
                    image(figs.cohort_bars(p), "participants by site and group"))


def _exclusions(out: _Output) -> pd.DataFrame:
    rows = []
    for module in out.modules:
        info = out.info.get(module)
        if info is not None and "excluded" in getattr(info, "columns", []):
            for pid, reason in info["excluded"].dropna().items():
                if str(reason):
                    rows.append({"participant_id": pid, "module": module, "reason": str(reason)})
        table_ = _read_tsv(out.root / "group" / f"{module}_excluded.tsv")
        if table_ is not None and "participant_id" in table_:
            for _, r in table_.iterrows():
                reason = next((str(r[c]) for c in table_.columns if c != "participant_id"), "")
                rows.append({"participant_id": r["participant_id"], "module": module, "reason": reason})
    frame = pd.DataFrame(rows, columns=["participant_id", "module", "reason"])
    return frame.drop_duplicates(subset=["participant_id", "module"]).reset_index(drop=True)


def _motion(out: _Output) -> pd.DataFrame:
    """Per participant, every motion measure found in the features or the sidecars' info."""
    cols = {}
    for module in out.modules:
        for frame in (out.features.get(module), out.info.get(module)):
            if frame is None or frame.empty:
                continue
            for c in frame.columns:
                short = c.split(".", 1)[-1]
                if any(k in short for k in ("mean_fd", "scrubbed", "max_fd")):
                    values = pd.to_numeric(frame[c], errors="coerce")
                    if values.notna().any():
                        cols.setdefault(f"{module}.{short}", values)
    motion = pd.DataFrame(cols)
    motion.index.name = "participant_id"
    return motion


def _runs_and_sessions(out: _Output) -> list[Markup]:
    """Which sessions and runs went into each analysis, and who was left out of it, and why."""
    body, summary, left = [], [], []
    for module in out.modules:
        runs = out.runs.get(module)
        if runs is None or runs.empty:
            continue
        per_unit = runs["runs used"].map(lambda text: 0 if text.startswith("(") else len(text.split(", ")))
        notes = out.notes.get(module) or {}
        used = notes.get("sessions") or {}
        summary.append({
            "module": module, "participant-sessions": len(runs),
            "sessions": ", ".join(sorted({s for s in runs["session"] if s})) or "(none)",
            "runs per participant-session": (f"{per_unit.min()}" if per_unit.min() == per_unit.max()
                                             else f"{per_unit.min()}-{per_unit.max()}"),
            "session of the group statistics": ", ".join(sorted({str(s) for s in used.values() if s}))
            or ("(no sessions)" if used else "(group level not run)")})
        for row in notes.get("left_out") or []:
            left.append({"module": module, **row})
    if summary:
        body.append(table(pd.DataFrame(summary), caption="Sessions and runs used by each analysis"))
        detail = pd.concat([out.runs[m].assign(module=m) for m in out.modules
                            if m in out.runs and not out.runs[m].empty], ignore_index=True)
        detail = detail[["module", "participant_id", "session", "runs used", "in group statistics"]]
        body.append(table(detail, max_rows=60, caption="Runs used per participant and session"))
    if left:
        body.append(table(pd.DataFrame(left, columns=["module", "participant_id", "session", "reason"]),
                          caption="Left out of each module's group statistics, and why"))
    return body


def _quality(out: _Output) -> Markup:
    body = []
    counts = []
    excl = _exclusions(out)
    for module in out.modules:
        n_results = len(out.features.get(module, []))
        n_failed = int((out.failures["module"] == module).sum()) if len(out.failures) else 0
        if n_results == 0 and n_failed == 0:
            continue
        counts.append({"module": module, "participants with results": n_results,
                       "excluded for quality": int((excl["module"] == module).sum()),
                       "skipped (missing or unusable input)": n_failed})
    if counts:
        body.append(table(pd.DataFrame(counts), caption="Participants per module"))
    else:
        body.append(tag("p", "No participant-level results in this folder.", class_="absent"))
    motion = _motion(out)
    if not motion.empty:
        parts = out.participants.reindex(motion.index)
        quality = motion.join(parts[[c for c in ("group", "site") if c in parts]])
        rows = []
        for col in motion.columns:
            for key in ("group", "site"):
                if key not in quality:
                    continue
                for level, part in quality.groupby(quality[key].fillna("n/a")):
                    rows.append({"measure": col, key if key == "group" else "group": level if key == "group" else f"site {level}",
                                 "n": int(part[col].notna().sum()), "mean (SD)": _mean_sd(part[col]),
                                 "max": _number(part[col].max())})
        if rows:
            body.append(table(pd.DataFrame(rows), caption="Head motion (framewise displacement, mm; scrubbed fraction of volumes)"))
        fd = next((c for c in motion.columns if "mean_fd" in c), None)
        if fd:
            body.append(image(figs.motion_plot(quality, fd), "mean framewise displacement",
                              "Mean framewise displacement per participant by group."))
    else:
        body.append(tag("p", "No motion measures were recorded (the connectivity module reports them)."))
    body += _runs_and_sessions(out)
    if len(excl):
        body.append(table(excl, caption="Participants excluded from group statistics (quality)"))
    else:
        body.append(tag("p", "No participant was excluded for quality."))
    if len(out.failures):
        body.append(table(out.failures, caption="Participant stages skipped (input missing or unusable)"))
    else:
        body.append(tag("p", "No participant stage was skipped."))
    return _section("quality", "Data quality", *body)


def _findings_view(findings: pd.DataFrame, alpha: float) -> pd.DataFrame:
    f = findings.copy()
    view = pd.DataFrame({
        "feature": f["feature"].astype(str), "contrast": f["contrast"].astype(str),
        "estimate": f["estimate"].map(_number),
        "95% CI": [f"[{_number(a)}, {_number(b)}]" for a, b in zip(f["ci_low"], f["ci_high"])],
        "p": f["p"], "p_corrected": f["p_corrected"], "n": f["n"]})
    return view


def _category(module: str, out: _Output, alpha: float) -> Markup:
    title, intro = _category_text(module)
    status = _module_status(module, out)
    if status != "present":
        return _section(module, title, tag("p", intro), _absent(title, status))
    findings = out.findings(module)
    body = [tag("p", intro)]
    if findings is None or findings.empty:
        body.append(tag("p", "The module ran but tested no a-priori feature (see its notes)."))
    else:
        p_corr = pd.to_numeric(findings["p_corrected"], errors="coerce")
        sig = (p_corr < alpha).to_numpy()
        n_part = out.features.get(module)
        lead = (f"{len(findings)} a-priori tests on {len(n_part) if n_part is not None else 'n/a'} participants; "
                f"{int(sig.sum())} significant after Holm correction within the module (alpha {alpha:g}).")
        if sig.any():
            top = findings[sig].assign(_abs=lambda d: d["estimate"].abs()).sort_values("_abs", ascending=False)
            lead += " Strongest: " + "; ".join(
                f"{r.feature} ({r.contrast}) {_number(r.estimate, 2)} [{_number(r.ci_low, 2)}, {_number(r.ci_high, 2)}]"
                for r in top.head(3).itertuples()) + "."
        body.append(tag("p", lead))
        body.append(image(figs.forest_plot(findings, alpha), f"{module} forest plot",
                          "Standardized estimates (Cohen's d for group contrasts, r for continuous "
                          "ones) with 95% confidence intervals; filled: significant after correction."))
        order = np.argsort(p_corr.fillna(2).to_numpy(), kind="stable")
        body.append(table(_findings_view(findings, alpha).iloc[order].reset_index(drop=True),
                          highlight=sig[order], caption=f"Findings ({module}_findings.tsv)"))
    clusters = _read_tsv(out.root / "group" / f"{module}_clusters.tsv")
    if clusters is not None:
        if clusters.empty:
            body.append(tag("p", "Voxel-wise analysis: no cluster survived family-wise error correction."))
        else:
            body.append(table(clusters, max_rows=30, highlight=(pd.to_numeric(clusters["p_fwe"], errors="coerce") < alpha),
                              caption="Voxel-wise clusters (peak MNI mm, FWE-corrected)"))
    for path in out.group_files(f"{module}_", ".png"):
        name = path.stem[len(module) + 1:].replace("_", " ")
        body.append(image(path.read_bytes(), f"{module} {name}", f"{title}: {name}"))
    notes = (out.notes.get(module) or {}).get("notes") or []
    if notes:
        body.append(tag("h3", "Notes"))
        body.append(tag("ul", *[tag("li", n) for n in notes]))
    extra = [p for p in out.group_files(f"{module}_", ".tsv")
             if p.name not in (f"{module}_findings.tsv", f"{module}_clusters.tsv", f"{module}_features.tsv",
                               f"{module}_excluded.tsv")]
    for path in extra:
        t = _read_tsv(path)
        if t is None:
            continue
        body.append(tag("details", tag("summary", f"{path.name} ({len(t)} rows)"), table(t, max_rows=25)))
    return _section(module, title, *body)


def _axes_tables(out: _Output) -> pd.DataFrame:
    rows = []
    for path in sorted(out.root.glob("sub-*/sub-*_desc-plasticity_axes.tsv")):
        t = _read_tsv(path)
        if t is None or t.empty:
            continue
        if "participant_id" not in t:
            t.insert(0, "participant_id", path.name.split("_", 1)[0])
        rows.append(t.iloc[[0]])
    return pd.concat(rows).set_index("participant_id") if rows else pd.DataFrame()


def _radars(out: _Output) -> list[Markup]:
    axes = _axes_tables(out)
    axes = axes[[c for c in axes.columns if c in out.modules]] if not axes.empty else axes
    if axes.empty:
        return [tag("p", "Plasticity profiles: not available (no sub-*_desc-plasticity_axes.tsv in "
                         "this folder).", class_="absent")]
    parts = out.participants.reindex(axes.index)
    axes = axes.apply(pd.to_numeric, errors="coerce")
    items = []
    if "group" in parts:
        prof = {f"{g} (n={int((parts['group'] == g).sum())})": axes[parts["group"] == g].mean()
                for g in sorted(parts["group"].dropna().unique())}
        items.append(image(figs.radar_plot(prof, "Plasticity profile by group"), "plasticity profile by group",
                           "Mean axis score per group (root mean square of normative z over each "
                           "module's features; 1 = a typical control, dashed)."))
    if "treatment_response" in parts and parts["treatment_response"].notna().any():
        resp = parts["treatment_response"].astype(str)
        prof = {f"{g} (n={int((resp == g).sum())})": axes[resp == g].mean()
                for g in ("responder", "non-responder") if (resp == g).any()}
        items.append(image(figs.radar_plot(prof, "Plasticity profile by treatment response"),
                           "plasticity profile by treatment response", "Patients' mean axis scores by later treatment response."))
    return items


#: Metric names in the biomarker tables, where the plain name would be ambiguous.
_METRIC_LABELS = {"auc": "AUC (mean over folds)", "auc_pooled": "AUC (scores pooled over folds)"}


def _metrics_table(metrics: dict) -> pd.DataFrame:
    rows = []
    for name, value in (metrics or {}).items():
        if isinstance(value, dict) and "estimate" in value:
            rows.append({"metric": _METRIC_LABELS.get(name, name.replace("_", " ")),
                         "estimate": _number(value.get("estimate")),
                         "95% CI": f"[{_number(value.get('ci_low'))}, {_number(value.get('ci_high'))}]"})
    return pd.DataFrame(rows, columns=["metric", "estimate", "95% CI"])


def _site_table(rows: list[dict]) -> pd.DataFrame:
    out = []
    for row in rows or []:
        r = {"held-out site": row.get("site"), "n": row.get("n"), "n train": row.get("n_train")}
        for name in ("auc", "balanced_accuracy", "sensitivity", "specificity", "r", "mae"):
            v = row.get(name)
            if isinstance(v, dict):
                r[name.replace("_", " ")] = (f"{_number(v.get('estimate'))} "
                                             f"[{_number(v.get('ci_low'))}, {_number(v.get('ci_high'))}]")
        if row.get("note"):
            r["note"] = row["note"]
        out.append(r)
    return pd.DataFrame(out)


def _connectome_biomarker(out: _Output, target: str, result: dict) -> list:
    """Notes of a biomarker result (feature fallback, exclusions) and, for connectome features,
    the predictive network by atlas network pair and the top edges."""
    items = [tag("p", f"Note: {text}", class_="small") for text in result.get("notes") or []]
    if result.get("features") != "connectome":
        return items
    info = result.get("connectome") or {}
    items.append(tag("p", f"Connectome features: {info.get('kind', 'n/a')} edges of "
                          f"{info.get('n_regions', 'n/a')} regions; model: {info.get('model', 'n/a')}; "
                          f"edges in the final model: {info.get('final_k', 'n/a')}.", class_="small"))
    nets = _read_tsv(out.root / "group" / f"biomarker_{target}_networks.tsv")
    if nets is not None and len(nets):
        nets = nets[pd.to_numeric(nets["n_predictive"], errors="coerce") > 0]
        items.append(table(nets.round(4), max_rows=15, caption="Predictive network by atlas network "
                           "pair (edges selected in at least half of the outer folds; weight sum: "
                           "positive = stronger coupling, higher target)"))
    edges = _read_tsv(out.root / "group" / f"biomarker_{target}_edges.tsv")
    if edges is not None and len(edges):
        cols = [c for c in ("edge", "network_pair", "selection_frequency", "mean_weight") if c in edges]
        items.append(table(edges[cols].head(15).round(4), caption=f"Most often selected edges (all in "
                           f"group/biomarker_{target}_edges.tsv)"))
    return items


def _biomarker(out: _Output) -> Markup:
    paths = [p for p in out.group_files("biomarker_", ".json")]
    body = [tag("p", "Individual-level prediction from the plasticity features: out-of-fold "
                     "performance from repeated nested cross-validation (harmonization and every "
                     "learned step inside the training folds) and leave-one-site-out validation.")]
    if not paths:
        body.append(tag("p", "Biomarker: not run / not available in this version — no "
                             "group/biomarker_<target>.json in this folder.", class_="absent"))
    for path in paths:
        result = _read_json(path)
        target = path.stem[len("biomarker_"):]
        if not isinstance(result, dict):
            body.append(tag("p", f"{path.name} could not be read.", class_="absent"))
            continue
        body.append(tag("h3", f"Target: {target}"))
        facts = [f"{result.get('description') or result.get('column') or target}",
                 f"n = {result.get('n', 'n/a')}", f"sites = {result.get('n_sites', 'n/a')}"]
        if result.get("permutation_p") is not None:
            facts.append(f"permutation p = {_p(result['permutation_p'])}")
        body.append(tag("p", "; ".join(str(f) for f in facts) + "."))
        if result.get("scheme"):
            body.append(tag("p", f"Validation: {result['scheme']}.", class_="small"))
        mt = _metrics_table(result.get("metrics"))
        if len(mt):
            body.append(table(mt, caption="Out-of-fold performance (95% CI: bootstrap, widened "
                                           "to the corrected variance over folds)"))
        preds = _read_tsv(out.root / "group" / f"biomarker_{target}_predictions.tsv")
        row = []
        classes = result.get("classes") or []
        kind = result.get("kind")
        if preds is not None and kind == "binary" and len(classes) == 2 and {"target", "score"} <= set(preds):
            positive = preds["target"].astype(str) == str(classes[-1])
            metrics = result.get("metrics") or {}
            row.append(image(figs.roc_plot(positive.to_numpy(), preds["score"].to_numpy(float),
                                           metrics.get("auc_pooled", metrics.get("auc")),
                                           title=f"ROC: {classes[-1]} vs {classes[0]}"),
                             f"ROC {target}", "Out-of-fold ROC of the participants' scores (mean "
                             "over repeats, pooled over folds), labelled with the pooled AUC; "
                             "95% bootstrap band."))
        row.append(image(figs.calibration_plot(result.get("calibration") or []),
                         f"calibration {target}", "Calibration: observed against predicted probability."))
        if preds is not None and "prediction" in preds and kind != "continuous":
            row.append(image(figs.confusion_plot(preds["target"], preds["prediction"]),
                             f"confusion matrix {target}", "Confusion matrix of out-of-fold predictions."))
        for png in out.group_files(f"biomarker_{target}", ".png"):
            row.append(image(png.read_bytes(), png.stem, png.stem.replace("_", " ")))
        if any(row):
            body.append(tag("div", *row, class_="row"))
        body.extend(_connectome_biomarker(out, target, result))
        sites = _site_table(result.get("leave_site_out"))
        if len(sites):
            body.append(table(sites, caption="Leave-one-site-out validation (train on the other sites)"))
        if result.get("model"):
            body.append(tag("p", f"Model file: {result['model']}", class_="small"))
    body.append(tag("h3", "Plasticity profiles"))
    body.extend(_radars(out))
    return _section("biomarker", "Biomarker", *body)


def _versions() -> dict[str, str]:
    import importlib.metadata as md
    out = {"painplast": __version__, "python": platform.python_version()}
    for name in ("numpy", "scipy", "pandas", "nibabel", "nilearn", "scikit-learn", "matplotlib"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


def _methods(out: _Output) -> Markup:
    cfg = out.config
    ran = [m for m in out.modules if (out.root / "group" / f"{m}_findings.tsv").exists()]
    v = _versions()
    text = (
        f"Analyses were run with painplast {v['painplast']} (Python {v['python']}; "
        + ", ".join(f"{k} {val}" for k, val in v.items() if k not in ("painplast", "python"))
        + "). Inputs were BIDS data preprocessed with fMRIPrep in "
        f"{cfg.get('space', 'MNI152NLin2009cAsym')} space. Modules: {', '.join(ran) or 'none'}. "
        f"First-level models used the {cfg.get('hrf_model', 'glover')} haemodynamic response with a "
        f"high-pass cut-off of {_number(cfg.get('high_pass'))} Hz; region-of-interest features used "
        f"{_number(cfg.get('roi_radius_mm'))} mm spheres on unsmoothed data and voxel-wise maps "
        f"{_number(cfg.get('smoothing_fwhm'))} mm FWHM smoothing. Group contrasts report Cohen's d, "
        "clinical correlations partial r, both with 95% confidence intervals, and p-values corrected "
        "with Holm's method within each module; voxel-wise and network inference used "
        f"{_number(cfg.get('n_permutations'))} permutations (TFCE and network-based statistic, "
        f"family-wise alpha {_number(cfg.get('alpha'))}). Random seed {_number(cfg.get('random_state'))}."
    )
    if cfg.get("signatures"):
        text += " Pain signatures: " + ", ".join(Path(s).name for s in cfg["signatures"]) + "."
    return _section("methods", "Methods", tag("p", text),
                    table(pd.DataFrame({"software": list(v), "version": list(v.values())}),
                          caption="Software versions"),
                    tag("details", tag("summary", "All parameters"),
                        tag("pre", json.dumps(cfg, indent=1, sort_keys=True, default=str))),
                    tag("h3", "References"), tag("ol", *[tag("li", c) for c in CITATIONS]))


def _glance(out: _Output, alpha: float) -> Markup:
    items = [f"{len(out.participants)} participants"]
    for module in out.modules:
        f = out.findings(module)
        if f is None:
            items.append(f"{module}: not run")
        else:
            n = int((pd.to_numeric(f["p_corrected"], errors="coerce") < alpha).sum())
            items.append(f"{module}: {n} of {len(f)} findings significant")
    for path in out.group_files("biomarker_", ".json"):
        r = _read_json(path) or {}
        auc = ((r.get("metrics") or {}).get("auc") or {}) if isinstance(r, dict) else {}
        if auc.get("estimate") is not None:
            items.append(f"{path.stem[10:]} biomarker AUC {_number(auc['estimate'], 2)} "
                         f"[{_number(auc.get('ci_low'), 2)}, {_number(auc.get('ci_high'), 2)}]")
        r = ((r.get("metrics") or {}).get("r") or {}) if isinstance(r, dict) else {}
        if not auc.get("estimate") and r.get("estimate") is not None:
            items.append(f"{path.stem[10:]} biomarker r {_number(r['estimate'], 2)} "
                         f"[{_number(r.get('ci_low'), 2)}, {_number(r.get('ci_high'), 2)}]")
    return tag("div", tag("strong", "At a glance: "), "; ".join(items) + ".", class_="glance")


STYLE = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;max-width:1100px;margin:0 auto;
padding:0 1.2em 3em;color:#222;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.1em}h2{border-bottom:2px solid #2471a3;padding-bottom:.2em;margin-top:2em}
nav{position:sticky;top:0;background:#fff;padding:.4em 0;border-bottom:1px solid #ddd;z-index:2}
nav a{margin-right:.9em;color:#2471a3;text-decoration:none;font-size:.92em}
table{border-collapse:collapse;margin:.8em 0;font-size:.85em}caption{text-align:left;font-weight:600;padding:.3em 0}
th,td{border:1px solid #ccc;padding:.25em .55em;text-align:left;vertical-align:top}
th{background:#f3f6f9}tr.sig td{background:#fdecea;font-weight:600}
figure{display:inline-block;margin:.6em 1em .6em 0;vertical-align:top}
figure img{max-width:100%;border:1px solid #eee}figcaption{font-size:.8em;color:#555;max-width:480px}
.absent{color:#8a6d3b;background:#fcf8e3;padding:.5em .8em;border-left:4px solid #f0ad4e}
.glance{background:#eef5fb;padding:.7em 1em;border-left:4px solid #2471a3;margin:1em 0}
.small{font-size:.85em;color:#555}.row{display:flex;flex-wrap:wrap;align-items:flex-start}
pre{font-size:.8em;background:#f7f7f7;padding:.6em;overflow:auto}
"""


def render_report(output_dir: str | Path) -> str:
    """The report of a painplast output folder as an HTML string.

    Parameters
    ----------
    output_dir : path
        A painplast output folder (with ``dataset_description.json``).

    Returns
    -------
    str
        A complete, self-contained HTML document.
    """
    root = Path(output_dir)
    if not (root / "dataset_description.json").exists():
        raise InputError("not a painplast output folder (no dataset_description.json)", path=root,
                         fix="give the OUTPUT_DIR of 'painplast run'")
    out = _Output(root)
    alpha = float(out.config.get("alpha", 0.05) or 0.05)
    titles = {"cohort": "Cohort", "quality": "Data quality",
              **{m: _category_text(m)[0] for m in out.modules},
              "biomarker": "Biomarker", "methods": "Methods"}
    nav_ids = list(section_ids())
    sections = [_cohort(out), _quality(out), *[_category(m, out, alpha) for m in out.modules],
                _biomarker(out), _methods(out)]
    # longitudinal and reliability sections, only when their results exist (report/longitudinal.py)
    from . import longitudinal as _longitudinal
    for sid, title, body in (("longitudinal", "Longitudinal change",
                              _longitudinal.longitudinal_section(root, out.modules, out.participants, alpha)),
                             ("reliability", "Test-retest reliability", _longitudinal.reliability_section(root))):
        if body:
            titles[sid] = title
            nav_ids.insert(nav_ids.index("biomarker"), sid)
            sections.insert(len(sections) - 2, _section(sid, title, *body))
    nav = tag("nav", *[tag("a", titles[s], href=f"#{s}") for s in nav_ids])
    header = tag("header", tag("h1", "painplast report: pain-induced neuroplasticity"),
                 tag("p", f"Output folder {root.resolve()}; source dataset "
                          f"{out.source if out.source else 'unknown'}; painplast {__version__}; "
                          f"generated {time.strftime('%Y-%m-%d %H:%M')}.", class_="small"))
    body = tag("body", header, nav, _glance(out, alpha), *sections)
    head = Markup('<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">'
                  "<title>painplast report</title><style>" + STYLE + "</style></head>")
    return "<!DOCTYPE html>\n" + Markup(f'<html lang="en">{head}{body}</html>') + "\n"


def write_report(output_dir: str | Path) -> Path:
    """Write ``OUTPUT_DIR/report.html`` (atomically) from the results in the folder.

    Parameters
    ----------
    output_dir : path
        A painplast output folder.

    Returns
    -------
    Path
        The report's path.

    Examples
    --------
    >>> from painplast import engine
    >>> from painplast.cohort import Cohort
    >>> from painplast.config import Config
    >>> cohort, config = Cohort.from_bids(bids_dir), Config(modules=("structure",), n_permutations=20)
    >>> _ = engine.run_participant_level(cohort, config, "derivatives", progress=False)
    >>> _ = engine.run_group_level(cohort, config, "derivatives", progress=False)
    >>> write_report("derivatives")
    PosixPath('derivatives/report.html')
    """
    root = Path(output_dir)
    path = root / "report.html"
    atomic_write_text(path, render_report(root))
    return path
