"""One participant's whole participant level against the time to read its input images once.

usage: python benchmarks/participant.py [--resolution 2] [--volumes 300] [--repeats 2] [--bids DIR]
                                        [--participant sub-001] [--keep DIR]

A simulated participant (painplast's simulator at ``--resolution`` mm, ``--volumes`` volumes per
run; or ``--bids`` a dataset simulated before, e.g. by benchmarks/first_level.py) has a pain, a
somatotopy, a modulation and a resting run with fMRIPrep's brain masks and confounds, and a
gray-matter probability map. The benchmark runs painplast's participant level on it with all
five modules (``engine.run_participant_level``, one process, as ``painplast run BIDS OUT
participant --participant-label 001`` does: the outputs, their sidecars and the SHA-256 of every
input file are written) and compares its time with the floor of any tool that reads these
images: decompressing every input NIfTI image of the participant once (zlib, the whole file,
block by block; the files are in the page cache, read once before timing). The run and the floor
alternate ``--repeats`` times in one process (the machine may be shared); the fastest of each is
kept and their ratio printed (``total / read once``), in wall time and in this process's CPU
time (which other programs on a shared machine do not inflate). The floor is also given as
nibabel reads the images (``np.asarray(img.dataobj)``: the same decompression plus the array).

Also printed: seconds per module as the engine logs them (the first module of a run's engine
task includes reading the run), and the peak resident memory of this process after the first
participant level (nothing else ran before it; the floor inflates 4 MB blocks). The
simulation, when needed, runs in a child process so it does not count. The last line is one JSON
object.
"""
from __future__ import annotations

import argparse
import json
import logging
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

MODULES = ("sensitization", "reorganization", "connectivity", "structure", "modulation")


def simulate(resolution: int, volumes: int) -> Path:
    """Simulate four participants (one site: the simulator's minimum) in a child process."""
    root = Path(tempfile.mkdtemp(prefix="painplast-participant-")) / "bids"
    counts = ", ".join(f"volumes_{t}={volumes}" for t in ("pain", "somatotopy", "modulation", "rest"))
    code = ("from pathlib import Path; from painplast.simulate import SimulationParameters, simulate; "
            f"simulate(Path({str(root)!r}), SimulationParameters(n_participants=4, n_sites=1, "
            f"resolution={resolution}, {counts}), n_jobs=2, progress=False)")
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    print(f"simulated {resolution} mm, {volumes} volumes per run in {time.perf_counter() - t0:.0f} s", flush=True)
    return root


def images(subject) -> list[Path]:
    """The participant's input NIfTI images (what the engine checksums, images only)."""
    return sorted({Path(p) for p in subject.files if str(p).endswith((".nii", ".nii.gz"))})


def read_once(paths, block: int = 1 << 22) -> int:
    """Decompress every file whole (zlib, gzip members in turn); returns the bytes inflated."""
    total = 0
    for path in paths:
        with open(path, "rb") as handle:
            if not str(path).endswith(".gz"):
                while chunk := handle.read(block):
                    total += len(chunk)
                continue
            inflater, data = zlib.decompressobj(31), b""
            while True:
                if inflater.eof:                       # the next gzip member, if any
                    data, inflater = inflater.unused_data, zlib.decompressobj(31)
                if not data:
                    data = handle.read(block)
                    if not data:
                        break
                total += len(inflater.decompress(data))
                data = b""
    return total


def read_nibabel(paths) -> None:
    import nibabel as nib
    for path in paths:
        arr = np.asarray(nib.load(str(path)).dataobj)
        del arr


class Stages(logging.Handler):
    """Seconds per module from the engine's '<unit> <module> done (x s)' log lines."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.seconds: dict[str, float] = {}

    def emit(self, record):
        m = re.match(r"\S+ (\w+) done \(([\d.]+) s\)", record.getMessage())
        if m:
            self.seconds[m.group(1)] = float(m.group(2))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--resolution", type=int, default=2)
    ap.add_argument("--volumes", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--bids", type=Path, default=None, help="a simulated dataset to use")
    ap.add_argument("--participant", default="sub-001")
    ap.add_argument("--keep", type=Path, default=None, help="keep the last output folder here")
    args = ap.parse_args(argv)
    bids = args.bids or simulate(args.resolution, args.volumes)

    import nibabel as nib
    from painplast import engine
    from painplast.cohort import Cohort
    from painplast.config import Config

    cohort = Cohort.from_bids(bids, participant_label=[args.participant.removeprefix("sub-")])
    subject = cohort.subject(args.participant)
    config = Config(modules=MODULES)
    paths = images(subject)
    size = sum(p.stat().st_size for p in paths)
    print(f"{args.participant}: {len(paths)} input images, {size / 2**20:.0f} MiB on disk", flush=True)
    for p in paths:
        img = nib.load(str(p))
        print(f"  {p.name}: {img.shape} {img.get_data_dtype()}")
    for p in paths:                                        # page cache warm for both
        p.read_bytes()
    handler = Stages()
    logger = logging.getLogger("painplast")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)

    work = Path(tempfile.mkdtemp(prefix="painplast-participant-out-"))
    t_run, t_read, t_nib, per_module, peak = [], [], [], [], None
    c_run, c_read = [], []
    for i in range(args.repeats):
        out = work / f"out-{i}"
        t0, c0 = time.perf_counter(), time.process_time()
        summary = engine.run_participant_level(cohort, config, out, n_jobs=1, progress=False)
        t_run.append(time.perf_counter() - t0)
        c_run.append(time.process_time() - c0)
        if peak is None:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        failed = [f"{m}: {why}" for _, m, why in summary.failed]
        if failed or len(summary.done) != len(MODULES):
            print("participant level failed:", failed, file=sys.stderr)
            return 1
        per_module.append(dict(handler.seconds))
        t0, c0 = time.perf_counter(), time.process_time()
        inflated = read_once(paths)
        t_read.append(time.perf_counter() - t0)
        c_read.append(time.process_time() - c0)
        t0 = time.perf_counter()
        read_nibabel(paths)
        t_nib.append(time.perf_counter() - t0)
        print(f"repeat {i + 1}: participant level {t_run[-1]:.1f} s (CPU {c_run[-1]:.1f} s), read once "
              f"{t_read[-1]:.1f} s (CPU {c_read[-1]:.1f} s; nibabel {t_nib[-1]:.1f} s); modules "
              f"{per_module[-1]}", flush=True)
        if args.keep and i == args.repeats - 1:
            shutil.rmtree(args.keep, ignore_errors=True)
            shutil.copytree(out, args.keep)
        shutil.rmtree(out)
    shutil.rmtree(work, ignore_errors=True)
    best = int(np.argmin(t_run))
    ratio = min(t_run) / min(t_read)
    cpu_ratio = min(c_run) / min(c_read)
    print(f"participant level (5 modules) {min(t_run):.1f} s; reading its {len(paths)} images once "
          f"{min(t_read):.1f} s ({inflated / 2**20:.0f} MiB inflated; nibabel {min(t_nib):.1f} s): "
          f"ratio {ratio:.2f} (vs nibabel's read {min(t_run) / min(t_nib):.2f}); CPU seconds "
          f"{min(c_run):.1f} / {min(c_read):.1f} = {cpu_ratio:.2f}; peak RSS {peak:.0f} MiB")
    print(json.dumps({"benchmark": "participant", "bids": str(bids), "participant": args.participant,
                      "images": len(paths), "mib_on_disk": round(size / 2**20),
                      "mib_inflated": round(inflated / 2**20),
                      "participant_level_s": round(min(t_run), 2), "read_once_s": round(min(t_read), 2),
                      "nibabel_read_s": round(min(t_nib), 2), "ratio": round(ratio, 2),
                      "ratio_vs_nibabel": round(min(t_run) / min(t_nib), 2),
                      "participant_level_cpu_s": round(min(c_run), 2), "read_once_cpu_s": round(min(c_read), 2),
                      "cpu_ratio": round(cpu_ratio, 2),
                      "module_s": per_module[best], "peak_rss_mb": round(peak),
                      "all_runs_s": [round(t, 2) for t in t_run], "all_reads_s": [round(t, 2) for t in t_read],
                      "repeats": args.repeats}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
