"""painplast as a user runs it: the installed command, offline, from simulation to prediction.

One job per test session (``e2e`` below, shared by the pytest-xdist workers) runs the installed
``painplast`` console script (the one beside ``sys.executable``, not ``cli.main``) in
subprocesses whose network is switched off: ``simulate`` (12 participants, 2 sites, 6 mm) ->
``run ... participant`` (all five modules, two worker processes) -> ``run ... group`` with a
diagnosis biomarker -> ``report`` -> ``predict`` on a second dataset. The tests then check what
the job promises: it ran without opening a network socket, the input folders are byte for byte
what they were, the report shows the numbers the result files hold, a run killed with SIGKILL
and rerun writes the same bytes, and the group, predict and report commands refuse bad input
with one line and exit status 2, writing nothing.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import shared_once
from painplast.cli import main

# one worker runs this file (pyproject: --dist loadgroup), so the other is not left waiting for
# the shared job while it is built
pytestmark = pytest.mark.xdist_group("end_to_end")

PAINPLAST = Path(sys.executable).with_name("painplast")
MODULES = ("sensitization", "reorganization", "connectivity", "structure", "modulation")
N = 12
SIMULATE = ["--participants", str(N), "--sites", "2", "--resolution", "6", "--seed", "5",
            "--effect-scale", "2.5", "--n-jobs", "2", "--quiet"]
#: Light settings (the job checks the flow, not the statistics): few permutations, one CV
#: repeat, a fixed penalty; no ComBat, which needs more participants per site and fold than 12.
CONFIG = {"n_permutations": 50, "options": {"biomarker": {
    "repeats": 1, "folds": 3, "inner_folds": 3, "n_permutations": 19, "n_bootstrap": 300,
    "learning": False, "model_options": {"harmonize": False, "penalties": [0.1],
                                         "screening": None}}}}
PREDICT_ON = ("sub-001", "sub-002", "sub-003", "sub-004")

#: sitecustomize for the job's processes (and their workers, which inherit PYTHONPATH): name
#: lookups and connections to anything but this machine are refused and written to a log.
#: Sockets themselves may be made and bound to the loopback (urllib3, imported by nilearn,
#: probes for IPv6 by binding one to ::1; joblib's workers talk over local pipes).
OFFLINE = '''
import ipaddress
import os
import socket

_LOG = os.environ["PAINPLAST_NETWORK_LOG"]
_LOCAL_NAMES = {None, "", "localhost", b"localhost"}


def _refuse(what):
    with open(_LOG, "a") as log:
        log.write(f"pid {os.getpid()}: {what}\\n")
    raise OSError(f"network access in an offline test: {what}")


def _local(host):
    if host in _LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.decode() if isinstance(host, bytes) else host).is_loopback
    except ValueError:
        return False


def _check(address, what):
    if isinstance(address, tuple) and not _local(address[0]):
        _refuse(f"{what} {address!r}")


class _OfflineSocket(socket.socket):
    def connect(self, address):
        _check(address, "connect")
        return super().connect(address)

    def connect_ex(self, address):
        _check(address, "connect_ex")
        return super().connect_ex(address)

    def sendto(self, data, *args):
        _check(args[-1], "sendto")
        return super().sendto(data, *args)


_getaddrinfo = socket.getaddrinfo


def _offline_getaddrinfo(host, *args, **kwargs):
    if not _local(host):
        _refuse(f"getaddrinfo {host!r}")
    return _getaddrinfo(host, *args, **kwargs)


def _blocked(name):
    def refuse(*args, **kwargs):
        _refuse(f"{name}{args[:1]!r}")
    return refuse


socket.socket = _OfflineSocket
socket.getaddrinfo = _offline_getaddrinfo
for _name in ("gethostbyname", "gethostbyname_ex", "gethostbyaddr"):
    setattr(socket, _name, _blocked(_name))
'''


def _digest(root: Path) -> dict[str, str]:
    """SHA-256 of every file under root, and each file's mode (by relative path)."""
    return {str(p.relative_to(root)): f"{hashlib.sha256(p.read_bytes()).hexdigest()} {p.stat().st_mode:o}"
            for p in sorted(root.rglob("*")) if p.is_file()}


def _offline_env(root: Path) -> dict[str, str]:
    guard = root / "offline"
    guard.mkdir(exist_ok=True)
    (guard / "sitecustomize.py").write_text(OFFLINE)
    path = os.pathsep.join(p for p in (str(guard), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "PAINPLAST_NETWORK_LOG": str(root / "network.log"),
            "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _subset(bids: Path, dest: Path, keep: tuple[str, ...]) -> Path:
    """A copy of a BIDS dataset with only the participants ``keep``."""
    def ignore(folder, names):
        return [n for n in names if n.startswith("sub-") and n not in keep
                and Path(folder, n).is_dir()]
    shutil.copytree(bids, dest, ignore=ignore)
    table = pd.read_csv(dest / "participants.tsv", sep="\t", dtype=str, keep_default_na=False)
    table[table.participant_id.isin(keep)].to_csv(dest / "participants.tsv", sep="\t", index=False)
    return dest


def _build(root: Path) -> None:
    env = _offline_env(root)
    bids, subset, out = root / "bids", root / "predict_bids", root / "out"
    config = root / "config.json"
    config.write_text(json.dumps(CONFIG))
    record = {"steps": []}

    def step(*args):
        t0 = time.perf_counter()
        run = subprocess.run([str(PAINPLAST), *map(str, args)], env=env, capture_output=True,
                             text=True, timeout=1800)
        record["steps"].append({"args": [str(a) for a in args], "code": run.returncode,
                                "stdout": run.stdout[-2000:], "stderr": run.stderr[-4000:],
                                "seconds": round(time.perf_counter() - t0, 1)})
        assert run.returncode == 0, (args, run.stdout[-2000:], run.stderr[-4000:])

    step("simulate", bids, *SIMULATE)
    _subset(bids, subset, PREDICT_ON)
    record["before"] = {"bids": _digest(bids), "predict_bids": _digest(subset)}
    step("run", bids, out, "participant", "--n-jobs", "2", "--quiet", "--config", config)
    step("run", bids, out, "group", "--biomarker", "diagnosis", "--quiet", "--config", config)
    step("report", out)
    step("predict", out / "models" / "diagnosis", subset, root / "predictions")
    record["after"] = {"bids": _digest(bids), "predict_bids": _digest(subset)}
    (root / "record.json").write_text(json.dumps(record))


@pytest.fixture(scope="module")
def e2e(tmp_path_factory) -> Path:
    """The job's folder: bids/, predict_bids/, out/, predictions/, config.json, record.json."""
    return shared_once(tmp_path_factory, "e2e", _build)


def _record(root: Path) -> dict:
    return json.loads((root / "record.json").read_text())


# ------------------------------------------------------------------ the job, offline
def test_offline_job_from_simulation_to_prediction(e2e):
    steps = _record(e2e)["steps"]
    assert [s["args"][0] for s in steps] == ["simulate", "run", "run", "report", "predict"]
    assert all(s["code"] == 0 for s in steps)
    log = e2e / "network.log"
    assert not log.exists(), log.read_text()
    out = e2e / "out"
    for module in MODULES:
        findings = pd.read_csv(out / "group" / f"{module}_findings.tsv", sep="\t")
        assert len(findings) and findings["p"].between(0, 1).all(), module
        assert len(list(out.glob(f"sub-*/*_desc-{module}_features.json"))) == N, module
    assert not (out / "logs" / "skipped").exists() or not any((out / "logs" / "skipped").iterdir())
    predictions = pd.read_csv(e2e / "predictions" / "predictions.tsv", sep="\t")
    assert predictions["participant_id"].tolist() == list(PREDICT_ON)
    assert predictions["prediction"].isin(["patient", "control"]).all()
    assert predictions["probability"].between(0, 1).all()


def test_the_offline_guard_refuses_and_records_a_connection(tmp_path):
    """The guard the job runs under can fail: a download attempt is refused and logged."""
    env = _offline_env(tmp_path)
    code = ("import urllib.request\n"
            "try:\n    urllib.request.urlopen('http://example.org', timeout=5)\n"
            "except OSError as error:\n    print('refused', error)\n")
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=60)
    assert "refused" in run.stdout, (run.stdout, run.stderr)
    assert "getaddrinfo 'example.org'" in (tmp_path / "network.log").read_text()
    code = ("import socket\n"
            "try:\n    socket.socket().connect(('93.184.215.14', 80))\n"
            "except OSError as error:\n    print('refused', error)\n")
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=60)
    assert "refused" in run.stdout, (run.stdout, run.stderr)
    assert "connect ('93.184.215.14', 80)" in (tmp_path / "network.log").read_text()
    # local inter-process pipes still work (joblib's workers need them)
    pipe = subprocess.run([sys.executable, "-c", "import socket; a, b = socket.socketpair(); "
                           "a.sendall(b'x'); print(b.recv(1))"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert pipe.stdout.strip() == "b'x'", pipe.stderr


def test_inputs_are_byte_identical_after_participant_group_report_and_predict(e2e):
    record = _record(e2e)
    for name in ("bids", "predict_bids"):
        before, after = record["before"][name], record["after"][name]
        assert len(before) > 100 and before == after, (
            name, sorted(set(before.items()) ^ set(after.items()))[:5])


def test_the_console_script_is_the_installed_entry_point(tmp_path):
    run = subprocess.run([str(PAINPLAST), "--version"], capture_output=True, text=True, timeout=120)
    import painplast
    assert run.returncode == 0 and painplast.__version__ in run.stdout, run
    # and turns bad input into one line and exit status 2, like main()
    run = subprocess.run([str(PAINPLAST), "report", str(tmp_path / "nowhere")], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 2, run
    assert len(run.stderr.strip().splitlines()) == 1 and "nowhere" in run.stderr, run.stderr
    assert "Traceback" not in run.stderr and not (tmp_path / "nowhere").exists()


# ------------------------------------------------------------------ the report shows the files' numbers
class _Tables(HTMLParser):
    """Every <table> of a page: its section, caption, header and rows (cell texts, row class)."""

    def __init__(self):
        super().__init__()
        self.tables, self.section, self._cell, self._row = [], None, None, None

    def handle_starttag(self, name, attrs):
        attrs = dict(attrs)
        if name == "section":
            self.section = attrs.get("id")
        elif name == "table":
            self.tables.append({"section": self.section, "caption": "", "header": [], "rows": []})
        elif name == "tr" and self.tables:
            self._row = {"class": attrs.get("class"), "cells": [], "header": False}
        elif name in ("td", "th", "caption"):
            self._cell = []
            if name == "th" and self._row is not None:
                self._row["header"] = True

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, name):
        if name in ("td", "th") and self._cell is not None and self._row is not None:
            self._row["cells"].append("".join(self._cell).strip())
            self._cell = None
        elif name == "caption" and self._cell is not None:
            self.tables[-1]["caption"] = "".join(self._cell).strip()
            self._cell = None
        elif name == "tr" and self._row is not None:
            table = self.tables[-1]
            if self._row["header"]:
                table["header"] = self._row["cells"]
            else:
                table["rows"].append(self._row)
            self._row = None


def _tables(html: str) -> list[dict]:
    parser = _Tables()
    parser.feed(html)
    return parser.tables


def _shows(text: str, value) -> bool:
    """Does the shown text stand for ``value`` (to the precision the text shows)?"""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return text == "n/a"
    if text.startswith("< "):                           # p-values below the display floor
        return float(value) < float(text[2:])
    shown = float(text)
    mantissa = text.lower().split("e")[0]
    decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
    exponent = int(text.lower().split("e")[1]) if "e" in text.lower() else 0
    return abs(shown - float(value)) <= 0.5 * 10.0 ** (exponent - decimals) * (1 + 1e-9) + 1e-12


def _interval(text: str) -> tuple[str, str]:
    low, high = re.fullmatch(r"\[(.+), (.+)\]", text).groups()
    return low, high


def test_report_shows_the_numbers_of_the_result_files(e2e):
    """Every number the report prints for findings and the biomarker is the file's number."""
    out = e2e / "out"
    html = (out / "report.html").read_text()
    tables = _tables(html)
    checked = 0
    # findings: one table per module, rows in order of p_corrected, significant rows highlighted
    for module in MODULES:
        findings = pd.read_csv(out / "group" / f"{module}_findings.tsv", sep="\t")
        table = next(t for t in tables if t["caption"] == f"Findings ({module}_findings.tsv)")
        assert table["section"] == module
        assert table["header"] == ["feature", "contrast", "estimate", "95% CI", "p",
                                   "p_corrected", "n"], table["header"]
        assert len(table["rows"]) == len(findings)
        rows = findings.set_index(["feature", "contrast"])
        for row in table["rows"]:
            feature, contrast, estimate, ci, p, p_corrected, n = row["cells"]
            truth = rows.loc[(feature, contrast)]
            low, high = _interval(ci)
            for text, value in ((estimate, truth.estimate), (low, truth.ci_low),
                                (high, truth.ci_high), (p, truth.p),
                                (p_corrected, truth.p_corrected), (n, truth.n)):
                assert _shows(text, value), (module, feature, contrast, text, value)
                checked += 1
            assert (row["class"] == "sig") == (truth.p_corrected < 0.05), (module, feature)
        shown_order = [float(r["cells"][5].replace("< ", "")) for r in table["rows"]]
        assert shown_order == sorted(shown_order), module
        n_sig = int((findings.p_corrected < 0.05).sum())
        section = html.split(f'<section id="{module}">')[1].split("</section>")[0]
        assert f"{n_sig} significant after Holm correction" in section
    # the biomarker: metrics, permutation p, leave-site-out rows
    result = json.loads((out / "group" / "biomarker_diagnosis.json").read_text())
    bio = [t for t in tables if t["section"] == "biomarker"]
    metrics = next(t for t in bio if t["caption"].startswith("Out-of-fold performance"))
    expected = [(k, v) for k, v in result["metrics"].items() if isinstance(v, dict) and "estimate" in v]
    assert len(metrics["rows"]) == len(expected) > 3
    for row, (name, value) in zip(metrics["rows"], expected):
        label, estimate, ci = row["cells"]
        assert name.split("_")[0] in label.lower(), (name, label)
        low, high = _interval(ci)
        for text, number in ((estimate, value["estimate"]), (low, value["ci_low"]),
                             (high, value["ci_high"])):
            assert _shows(text, number), (name, text, number)
            checked += 1
    section = html.split('<section id="biomarker">')[1].split("</section>")[0]
    shown_p = re.search(r"permutation p = (< 0\.001|\d\.\d{3})", section).group(1)
    assert _shows(shown_p, result["permutation_p"]), (shown_p, result["permutation_p"])
    assert f"n = {result['n']};" in section
    sites = next(t for t in bio if t["caption"].startswith("Leave-one-site-out"))
    assert len(sites["rows"]) == len(result["leave_site_out"]) == 2
    for row, truth in zip(sites["rows"], result["leave_site_out"]):
        cells = dict(zip(sites["header"], row["cells"]))
        assert cells["held-out site"] == truth["site"]
        assert int(cells["n"]) == truth["n"] and int(cells["n train"]) == truth["n_train"]
        estimate, rest = cells["auc"].split(" ", 1)
        low, high = _interval(rest)
        for text, number in ((estimate, truth["auc"]["estimate"]), (low, truth["auc"]["ci_low"]),
                             (high, truth["auc"]["ci_high"])):
            assert _shows(text, number), (truth["site"], text, number)
            checked += 1
    assert checked > 300


# ------------------------------------------------------------------ SIGKILL with two workers
def _participant_outputs(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and (p.relative_to(root).as_posix().startswith(("sub-", "logs/skipped/")))}


def test_sigkill_of_a_two_worker_run_then_rerun_gives_the_same_bytes(e2e, tmp_path):
    """The real modules, two joblib workers: the whole process group is killed (as the
    out-of-memory killer or a lost node would) after a quarter of the stages; the rerun must
    finish the job and leave exactly the bytes of the uninterrupted run."""
    out = tmp_path / "killed"
    command = [str(PAINPLAST), "run", str(e2e / "bids"), str(out), "participant", "--n-jobs", "2",
               "--quiet", "--config", str(e2e / "config.json")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    stages = N * len(MODULES)
    proc = subprocess.Popen(command, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 900
    try:
        while len(list(out.glob("sub-*/*_features.json"))) < stages // 4:
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "no progress"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    done = len(list(out.glob("sub-*/*_features.json")))
    assert stages // 4 <= done < stages, done
    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"{done} already done" in rerun.stdout, rerun.stdout
    assert not list(out.rglob("*.tmp"))
    reference, resumed = _participant_outputs(e2e / "out"), _participant_outputs(out)
    assert sorted(reference) == sorted(resumed)
    assert [k for k in reference if reference[k] != resumed[k]] == []
    assert len(reference) > stages


# ------------------------------------------------------------------ bad input: one line, exit 2, nothing written
def _one_line_exit_2(capsys, args, named: str) -> str:
    code = main([str(a) for a in args])
    err = capsys.readouterr().err.strip()
    assert code == 2, (code, err)
    assert len(err.splitlines()) == 1 and err.startswith("painplast: error:"), err
    assert named in err and "fix:" in err and "Traceback" not in err, err
    return err


def test_group_level_refuses_bad_input_before_writing(e2e, tmp_path, capsys):
    bids = e2e / "bids"
    before = _digest(bids)
    # an output folder without participant results (the participant level was not run)
    _one_line_exit_2(capsys, ["run", bids, tmp_path / "fresh", "group", "--quiet"], "fresh")
    assert not (tmp_path / "fresh").exists()
    # no participants.tsv
    empty = tmp_path / "empty_bids"
    empty.mkdir()
    _one_line_exit_2(capsys, ["run", empty, tmp_path / "o2", "group"], "participants.tsv")
    assert not (tmp_path / "o2").exists()
    # a biomarker target that participants.tsv does not have: refused before the group stage
    out = tmp_path / "out"
    shutil.copytree(e2e / "out", out, ignore=shutil.ignore_patterns("group", "models", "report.html"))
    listing = _digest(out)
    _one_line_exit_2(capsys, ["run", bids, out, "group", "--quiet", "--biomarker", "no_such_column",
                              "--config", e2e / "config.json"], "no_such_column")
    assert _digest(out) == listing
    assert _digest(bids) == before


def test_predict_refuses_bad_input_before_writing(e2e, tmp_path, capsys):
    subset = e2e / "predict_bids"
    model = e2e / "out" / "models" / "diagnosis"
    before = _digest(subset), _digest(model)
    _one_line_exit_2(capsys, ["predict", tmp_path / "no_model", subset, tmp_path / "p1"], "no_model")
    assert not (tmp_path / "p1").exists()
    tampered = tmp_path / "tampered"
    shutil.copytree(model, tampered)
    array = sorted(tampered.rglob("*.npy"))[0]
    data = bytearray(array.read_bytes())
    data[-1] ^= 1
    array.write_bytes(bytes(data))
    _one_line_exit_2(capsys, ["predict", tampered, subset, tmp_path / "p2"], array.name)
    assert not (tmp_path / "p2").exists()
    empty = tmp_path / "empty_bids"
    empty.mkdir()
    _one_line_exit_2(capsys, ["predict", model, empty, tmp_path / "p3"], "participants.tsv")
    assert not (tmp_path / "p3").exists()
    assert (_digest(subset), _digest(model)) == before


def test_report_refuses_a_folder_that_is_not_a_painplast_output(tmp_path, capsys):
    _one_line_exit_2(capsys, ["report", tmp_path / "missing"], "missing")
    assert not (tmp_path / "missing").exists()
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("not painplast's")
    _one_line_exit_2(capsys, ["report", other], "other")
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"]
