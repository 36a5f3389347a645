"""The HTML report, rendered in headless Chromium.

The output folder is built from the simulator's truth: regional gray matter and motion are the
simulated participants' noise-free values (participants_truth.tsv), the structure findings are
computed from them with the shared contrasts function, and the diagnosis "biomarker" is a
cross-validated logistic regression on them. The report must show the planted gray-matter
effects as significant, every section, the absent modules as absent, and data text (a hostile
participant ID, reason and note) as text, never as markup.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from painplast import contrasts
from painplast.config import Config
from painplast.derivatives import Derivatives, write_json, write_tsv
from painplast.report import write_report
from painplast.report import figures
from painplast.report.html import SECTION_IDS, esc, tag
from painplast.results import GroupResult, SubjectResult

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
HOSTILE = "<script>alert('x')</script>"
HOSTILE_IMG = '<img src=x onerror="alert(1)">'


def chromium(url: str, *args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    assert CHROMIUM, "chromium is not installed: run `make browser` (apt-get install chromium)"
    profile = tempfile.mkdtemp(prefix="chromium-")
    try:
        return subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
             *args, url], capture_output=True, text=True, timeout=timeout)
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def console_errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines()
            if "Uncaught" in line or re.search(r"CONSOLE\(\d+\)", line) or "Refused to" in line]


@pytest.fixture(scope="module")
def output(small_cohort, tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    """An output folder: structure and connectivity results, a diagnosis biomarker, profiles."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    out = tmp_path_factory.mktemp("report") / "out"
    deriv = Derivatives(out)
    deriv.initialise(small_cohort, Config().to_dict())
    parts = pd.read_csv(small_cohort / "participants.tsv", sep="\t", na_values="n/a",
                        keep_default_na=False).set_index("participant_id")
    truth = pd.read_csv(small_cohort / "derivatives/simulation/participants_truth.tsv", sep="\t",
                        index_col="participant_id")
    gm = [c for c in truth.columns if c.startswith("structure.")]
    config = {"config": Config(n_permutations=123).to_dict()}
    for pid in truth.index:
        deriv.write_subject(SubjectResult("structure", pid, truth.loc[pid, gm].to_dict()), config, "h")
        fd = float(truth.loc[pid, "mean_fd_target"])
        info = {"mean_fd": fd, "excluded": "mean FD above 0.5 mm" if pid == "sub-003" else ""}
        deriv.write_subject(SubjectResult("connectivity", pid, {"connectivity.mean_fd": fd}, info=info), config, "h")
    tests = [(f, c) for f in gm for c in ("patient-control", "pain_duration")]
    findings = contrasts.findings_table(truth[gm], parts, tests,
                                        extra_covariates={f: contrasts.module_covariates("structure", f) for f in gm})
    clusters = pd.DataFrame({"contrast": ["patient-control"], "peak_x": [-36.0], "peak_y": [40.0], "peak_z": [28.0],
                             "peak_stat": [5.1], "size_mm3": [2048.0], "p_fwe": [0.004], "label": ["dlpfc"]})
    deriv.write_group(GroupResult("structure", findings, clusters,
                                  tables={"atlas_effects": pd.DataFrame({"region": [HOSTILE], "d": [0.5]})},
                                  figures={"glass": figures.forest_plot(findings)},
                                  notes=(f"note with {HOSTILE}",)), config)
    deriv.write_failure("sub-<i>x", "sensitization", f"reason {HOSTILE_IMG}")
    # a diagnosis biomarker: out-of-fold logistic regression on the true regional gray matter
    y = (parts.loc[truth.index, "group"] == "patient").to_numpy()
    X = truth[gm].to_numpy()
    proba = cross_val_predict(LogisticRegression(max_iter=1000), (X - X.mean(0)) / X.std(0), y,
                              cv=StratifiedKFold(4, shuffle=True, random_state=0), method="predict_proba")[:, 1]
    from sklearn.metrics import roc_auc_score
    auc = roc_auc_score(y, proba)
    preds = pd.DataFrame({"participant_id": truth.index, "target": np.where(y, "patient", "control"),
                          "score": proba, "prediction": np.where(proba > 0.5, "patient", "control")})
    write_tsv(out / "group" / "biomarker_diagnosis_predictions.tsv", preds)
    order = np.argsort(proba)
    calibration = [{"predicted": float(proba[c].mean()), "observed": float(y[c].mean()), "n": len(c)}
                   for c in np.array_split(order, 4)]
    write_json(out / "group" / "biomarker_diagnosis.json", {
        "target": "diagnosis", "column": "group", "kind": "binary", "classes": ["control", "patient"],
        "description": "patient vs control", "scheme": "4-fold cross-validation", "n": len(y), "n_sites": 2,
        "metrics": {"auc": {"estimate": auc, "ci_low": auc - 0.1, "ci_high": min(auc + 0.1, 1.0)}},
        "calibration": calibration, "permutation_p": 0.01,
        "leave_site_out": [{"site": s, "n": int((parts["site"] == s).sum()), "n_train": 10,
                            "auc": {"estimate": 0.8, "ci_low": 0.6, "ci_high": 0.95}} for s in sorted(parts["site"].unique())],
        "model": None})
    # plasticity axes from the truth (RMS of z against controls)
    ctrl = parts.loc[truth.index, "group"] == "control"
    z = (truth[gm] - truth.loc[ctrl, gm].mean()) / truth.loc[ctrl, gm].std()
    for pid in truth.index:
        write_tsv(out / pid / f"{pid}_desc-plasticity_axes.tsv",
                  pd.DataFrame({"participant_id": [pid], "structure": [float(np.sqrt((z.loc[pid] ** 2).mean()))],
                                "connectivity": [1.0], "sensitization": [1.1]}))
    write_report(out)
    return out, findings


def test_report_content_matches_findings_and_truth(output, small_cohort):
    out, findings = output
    text = (out / "report.html").read_text()
    for sid in SECTION_IDS:
        assert f'<section id="{sid}">' in text
    # the planted gray-matter losses are in the findings and shown significant (highlighted rows)
    truth = json.loads((small_cohort / "derivatives/simulation/ground_truth.json").read_text())
    planted = {e["feature"] for e in truth["effects"] if e["module"] == "structure" and e["contrast"] == "patient-control"}
    sig = findings[(findings["contrast"] == "patient-control") & (findings["p_corrected"] < 0.05)]
    assert planted and planted <= set(sig["feature"])
    structure = text.split('<section id="structure">')[1].split("</section>")[0]
    for feature in planted:
        assert re.search(rf'<tr class="sig"><td>{re.escape(feature)}</td><td>patient-control</td>', structure)
    n_sig = int((findings["p_corrected"] < 0.05).sum())
    assert f"{n_sig} significant after Holm correction" in structure
    assert structure.count("data:image/png;base64,") >= 2  # forest plot + the module's own figure
    # absent modules are said to be absent, not faked
    for module in ("sensitization", "reorganization", "modulation"):
        section = text.split(f'<section id="{module}">')[1].split("</section>")[0]
        assert "not run / not available in this version" in section and "<table" not in section
    bio = text.split('<section id="biomarker">')[1].split("</section>")[0]
    assert bio.count("data:image/png;base64,") >= 5  # ROC, calibration, confusion, 2 radars
    assert "Leave-one-site-out" in bio and "site1" in bio
    assert "AUC (mean over folds)" in bio
    quality = text.split('<section id="quality">')[1].split("</section>")[0]
    assert "sub-003" in quality and "mean FD above 0.5 mm" in quality
    assert "123 permutations" in text  # the run's parameters reach the methods paragraph
    # self-contained: no script, no external resource
    assert "<script" not in text.lower() and "<link" not in text.lower()
    assert not re.search(r'(src|href)="(https?:)?//', text)


def test_report_renders_in_chromium_without_console_errors(output, tmp_path):
    out, _ = output
    url = (out / "report.html").resolve().as_uri()
    dom = chromium(url, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    for sid in SECTION_IDS:
        assert f'id="{sid}"' in dom.stdout
    # hostile text from the data is text in the DOM: escaped, no element created from it
    assert "<script" not in dom.stdout.lower()
    assert "&lt;script&gt;alert('x')&lt;/script&gt;" in dom.stdout
    assert "reason &lt;img src=x onerror=" in dom.stdout and "sub-&lt;i&gt;x" in dom.stdout
    assert console_errors(dom.stderr) == []
    shot = tmp_path / "report.png"
    run = chromium(url, f"--screenshot={shot}", "--window-size=1200,2400", "--hide-scrollbars")
    assert run.returncode == 0 and shot.exists(), run.stderr[-2000:]
    import matplotlib.image as mpimg
    pixels = mpimg.imread(shot)
    assert pixels.shape[0] >= 2000 and pixels.shape[1] >= 1000
    assert pixels[..., :3].std() > 0.05  # text and figures, not a blank page
    assert console_errors(run.stderr) == []
    shutil.copy(shot, out / "report_screenshot.png")


def test_console_error_detection_works(tmp_path):
    """The console check above can fail: a page with a script error is caught."""
    page = tmp_path / "bad.html"
    page.write_text("<html><body><p>x</p><script>undefinedFunction();</script></body></html>")
    run = chromium(page.as_uri(), "--dump-dom")
    assert console_errors(run.stderr), run.stderr[-2000:]


def test_escaping_helpers():
    assert esc(HOSTILE) == "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;"
    assert tag("a", HOSTILE, href='"><script>') == (
        '<a href="&quot;&gt;&lt;script&gt;">&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;</a>')
    assert tag("p", tag("b", "x")) == "<p><b>x</b></p>"  # markup made by tag is not escaped twice


def test_report_of_an_empty_folder_lists_everything_as_absent(tmp_path, small_cohort):
    out = tmp_path / "empty"
    Derivatives(out).initialise(small_cohort, {})
    text = write_report(out).read_text()
    for sid in SECTION_IDS:
        assert f'<section id="{sid}">' in text
    assert text.count("not run / not available in this version") >= 6  # five modules + biomarker
