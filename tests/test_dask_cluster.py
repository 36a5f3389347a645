"""A real dask.distributed cluster: ``dask scheduler`` and two ``dask worker`` processes started
from the command line, and ``painplast run ... --scheduler tcp://...`` on it.

The cluster is what a user starts on their machines (the commands of the README's "Running on a
cluster"), here bound to the loopback. painplast is the installed console script, run offline
(the end-to-end test's guard: name lookups and connections to anything but this machine are
refused and logged; the scheduler, the workers and painplast all run under it). A tiny simulated
cohort (8 participants, 6 mm, 40 volumes per run, all five modules) is processed twice at the
participant level, with joblib (``--n-jobs 2``) and on the cluster, and the outputs must be the
same bytes; then the group level (voxel-wise and NBS permutations) runs on each folder, without
and with ``--scheduler``, and must write the same bytes too. The workers' task counters prove the
cluster did the work. Every process started here is stopped by its process group id, also when a
test fails.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import simulated
from test_end_to_end import _digest, _offline_env

# the joblib reference and the cluster runs share folders: one xdist worker runs this file
pytestmark = [pytest.mark.xdist_group("dask_cluster"), pytest.mark.slow]

BIN = Path(sys.executable).parent
PAINPLAST, DASK = BIN / "painplast", BIN / "dask"
TINY = dict(n_participants=8, n_sites=2, seed=5, resolution=6, effect_scale=2.5, volumes_pain=40,
            volumes_somatotopy=40, volumes_modulation=40, volumes_rest=40)
CONFIG = {"n_permutations": 40}


def _stop(proc: subprocess.Popen) -> None:
    """Stop a process started in its own session and everything it started (by its group id)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        except ProcessLookupError:
            pass
    else:   # the leader is gone; its children (a nanny's worker) may not be
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _start(args, env, log: Path) -> subprocess.Popen:
    handle = open(log, "w")
    try:
        return subprocess.Popen([str(DASK), *args], env=env, stdout=handle, stderr=subprocess.STDOUT,
                                start_new_session=True)
    finally:
        handle.close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """``dask scheduler`` + two ``dask worker`` processes on 127.0.0.1; yields (address, env, root)."""
    root = tmp_path_factory.mktemp("dask_cluster")
    env = _offline_env(root)
    info = root / "scheduler.json"
    procs = []
    try:
        procs.append(_start(["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                             "--dashboard-address", "127.0.0.1:0",
                             "--scheduler-file", str(info)], env, root / "scheduler.log"))
        deadline = time.monotonic() + 60
        while not info.exists() and time.monotonic() < deadline:
            assert procs[0].poll() is None, (root / "scheduler.log").read_text()
            time.sleep(0.2)
        assert info.exists(), "the scheduler did not start in 60 s: " + (root / "scheduler.log").read_text()
        time.sleep(0.2)   # the file is written once; let the writer finish
        address = json.loads(info.read_text())["address"]
        assert address.startswith("tcp://127.0.0.1:")
        for name in ("w1", "w2"):
            procs.append(_start(["worker", address, "--host", "127.0.0.1", "--nthreads", "1",
                                 "--nworkers", "1", "--no-dashboard", "--dashboard-address", "127.0.0.1:0",
                                 "--name", name,
                                 "--local-directory", str(root / name), "--death-timeout", "60"],
                                env, root / f"{name}.log"))
        from dask.distributed import Client
        with Client(address, timeout="30s") as client:
            client.wait_for_workers(2, timeout=90)
            assert len(client.scheduler_info()["workers"]) == 2
        yield address, env, root
    finally:
        for proc in reversed(procs):
            _stop(proc)


def _counts(address: str) -> dict[str, int]:
    """Tasks each worker has finished so far (by worker name)."""
    from dask.distributed import Client
    with Client(address, timeout="30s") as client:
        done = client.run(lambda dask_worker: (dask_worker.name,
                                                sum(1 for e in dask_worker.state.log
                                                    if len(e) > 2 and e[2] == "memory")))
    return dict(done.values())


def _painplast(env, *args) -> subprocess.CompletedProcess:
    t0 = time.perf_counter()
    run = subprocess.run([str(PAINPLAST), *map(str, args)], env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, (args, run.stdout[-2000:], run.stderr[-3000:])
    print(f"painplast {' '.join(map(str, args[3:]))}: {time.perf_counter() - t0:.1f} s")
    return run


def _outputs(out: Path, part: str) -> dict[str, str]:
    """Digests of the participant outputs (``sub-*``, skipped records) or the group folder."""
    files = _digest(out)
    if part == "participant":
        return {k: v for k, v in files.items() if k.startswith("sub-") or k.startswith("logs/skipped/")}
    return {k: v for k, v in files.items() if k.startswith("group/")}


def test_cluster_from_the_command_line_writes_the_joblib_bytes(cluster, tmp_path):
    address, env, root = cluster
    bids = simulated(**TINY)
    config = tmp_path / "config.json"
    config.write_text(json.dumps(CONFIG))
    ref, out = tmp_path / "joblib", tmp_path / "dask"
    t0 = time.perf_counter()
    _painplast(env, "run", bids, ref, "participant", "--n-jobs", "2", "--quiet", "--config", config)
    before = _counts(address)
    _painplast(env, "run", bids, out, "participant", "--scheduler", address, "--quiet", "--config", config)
    after = _counts(address)
    a, b = _outputs(ref, "participant"), _outputs(out, "participant")
    assert len(a) > 5 * 8 * 2, sorted(a)[:10]      # five modules' features and sidecars per participant
    assert sorted(a) == sorted(b)
    assert [k for k in a if a[k] != b[k]] == []
    # both workers ran participant stages
    assert set(after) == {"w1", "w2"} and all(after[w] > before.get(w, 0) for w in after), (before, after)

    _painplast(env, "run", bids, ref, "group", "--quiet", "--config", config)
    mid = _counts(address)
    _painplast(env, "run", bids, out, "group", "--scheduler", address, "--quiet", "--config", config)
    end = _counts(address)
    a, b = _outputs(ref, "group"), _outputs(out, "group")
    assert any(k.endswith(".nii.gz") for k in a) and len(a) > 10, sorted(a)
    assert sorted(a) == sorted(b)
    assert [k for k in a if a[k] != b[k]] == []
    assert mid == after                                       # the joblib group level left the cluster alone
    assert sum(end.values()) > sum(mid.values()), (mid, end)  # the permutations ran on it
    # offline: nothing but loopback connections in any process (scheduler, workers, painplast)
    log = root / "network.log"
    assert not log.exists() or not log.read_text(), log.read_text()
    print(f"participant + group, joblib and cluster: {time.perf_counter() - t0:.1f} s")
