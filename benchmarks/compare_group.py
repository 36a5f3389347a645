"""Compare two painplast ``group/`` folders: the same findings, tables, maps and biomarker results?

usage: python benchmarks/compare_group.py BEFORE_GROUP AFTER_GROUP [--tolerance 1e-9]

For a refactoring that must not change behaviour (issue 17): every ``*_findings.tsv`` is joined
on (feature, contrast) and its numbers compared; every other table is compared by shape and, for
its numeric columns, by the largest absolute difference (row order as written), every NIfTI map
of the same name voxel by voxel; files present
on one side only are listed; ``biomarker_*.json`` metrics are compared estimate by estimate.
Prints one line per file that differs (and a summary of what is identical), the last line one
JSON object.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

KEYS = ("feature", "contrast")


def _numbers(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.select_dtypes(include=[np.number])


def compare_findings(a: pd.DataFrame, b: pd.DataFrame) -> dict:
    """Rows only in one table, and the largest difference of each numeric column on the others."""
    ka, kb = set(zip(a.feature, a.contrast)), set(zip(b.feature, b.contrast))
    joined = a.merge(b, on=list(KEYS), suffixes=("_a", "_b"))
    diffs = {}
    for column in ("estimate", "ci_low", "ci_high", "p", "p_corrected", "n"):
        x, y = joined[f"{column}_a"].to_numpy(float), joined[f"{column}_b"].to_numpy(float)
        both_nan = np.isnan(x) & np.isnan(y)
        diffs[column] = float(np.nanmax(np.where(both_nan, 0.0, np.abs(x - y)), initial=0.0))
    significant = int(((joined.p_corrected_a < 0.05) != (joined.p_corrected_b < 0.05)).sum())
    return {"rows_a": len(a), "rows_b": len(b), "only_a": sorted(map(list, ka - kb)),
            "only_b": sorted(map(list, kb - ka)), "max_abs_diff": diffs,
            "significance_changed": significant}


def compare_table(a: pd.DataFrame, b: pd.DataFrame) -> dict:
    out = {"shape_a": list(a.shape), "shape_b": list(b.shape),
           "columns_only_a": sorted(set(a.columns) - set(b.columns)),
           "columns_only_b": sorted(set(b.columns) - set(a.columns))}
    if a.shape[0] == b.shape[0]:
        common = [c for c in _numbers(a).columns if c in _numbers(b).columns]
        out["max_abs_diff"] = {c: float(np.nanmax(np.abs(a[c].to_numpy(float) - b[c].to_numpy(float)),
                                                  initial=0.0)) for c in common}
        text = [c for c in a.columns if c in b.columns and c not in common]
        out["text_differs"] = [c for c in text if not a[c].astype(str).equals(b[c].astype(str))]
    return out


def compare_biomarker(a: dict, b: dict) -> dict:
    out = {}
    for name, row in (a.get("metrics") or {}).items():
        other = (b.get("metrics") or {}).get(name) or {}
        if isinstance(row, dict) and "estimate" in row:
            out[name] = {k: (row.get(k), other.get(k)) for k in ("estimate", "ci_low", "ci_high")}
    out["permutation_p"] = (a.get("permutation_p"), b.get("permutation_p"))
    out["n_features"] = (a.get("n_features"), b.get("n_features"))
    return out


def _differs(report: dict, tolerance: float) -> bool:
    if report.get("only_a") or report.get("only_b") or report.get("columns_only_a") \
            or report.get("columns_only_b") or report.get("text_differs"):
        return True
    if "shape_a" in report and report["shape_a"] != report["shape_b"]:
        return True
    return any(v > tolerance for v in report.get("max_abs_diff", {}).values())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("before", type=Path)
    ap.add_argument("after", type=Path)
    ap.add_argument("--tolerance", type=float, default=1e-9)
    args = ap.parse_args(argv)
    kinds = (".tsv", ".json", ".gz")
    names_a = {p.name for p in args.before.iterdir() if p.suffix in kinds and "_notes" not in p.name}
    names_b = {p.name for p in args.after.iterdir() if p.suffix in kinds and "_notes" not in p.name}
    summary = {"benchmark": "compare_group", "only_before": sorted(names_a - names_b),
               "only_after": sorted(names_b - names_a), "identical": [], "different": {}}
    for name in sorted(names_a & names_b):
        pa, pb = args.before / name, args.after / name
        if name.startswith("biomarker_") and name.endswith(".json"):
            report = compare_biomarker(json.loads(pa.read_text()), json.loads(pb.read_text()))
            same = all(x == y for v in report.values() for x, y in
                       ([v] if isinstance(v, tuple) else v.values()))
        elif name.endswith(".tsv"):
            a = pd.read_csv(pa, sep="\t")
            b = pd.read_csv(pb, sep="\t")
            report = (compare_findings(a, b) if name.endswith("_findings.tsv")
                      else compare_table(a, b))
            same = not _differs(report, args.tolerance)
        elif name.endswith(".nii.gz"):
            import nibabel as nib
            a = np.asarray(nib.load(pa).dataobj, np.float64)
            b = np.asarray(nib.load(pb).dataobj, np.float64)
            report = {"shape_a": list(a.shape), "shape_b": list(b.shape),
                      "max_abs_diff": {"value": float(np.max(np.abs(a - b)))} if a.shape == b.shape else {}}
            same = not _differs(report, args.tolerance)
        else:
            continue
        if same:
            summary["identical"].append(name)
        else:
            summary["different"][name] = report
            print(f"{name}: {json.dumps(report, default=str)}")
    print(f"identical: {', '.join(summary['identical']) or 'none'}")
    print(f"only before: {summary['only_before']}; only after: {summary['only_after']}")
    print(json.dumps(summary, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
