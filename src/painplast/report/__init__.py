"""The report: one self-contained ``report.html`` per output folder (see :mod:`.html`).

Examples
--------
>>> from painplast import engine
>>> from painplast.cohort import Cohort
>>> from painplast.config import Config
>>> from painplast.report import write_report
>>> cohort, config = Cohort.from_bids(bids_dir), Config(modules=("structure",), n_permutations=20)
>>> _ = engine.run_participant_level(cohort, config, "out", progress=False)
>>> _ = engine.run_group_level(cohort, config, "out", progress=False)
>>> write_report("out")
PosixPath('out/report.html')
"""
from .html import render_report, write_report

__all__ = ["write_report", "render_report"]
