"""painplast's BIDS-derivatives output: names, atomic writes, provenance sidecars.

Layout of ``OUTPUT_DIR`` (see ``docs/architecture.md``)::

    dataset_description.json
    sub-<label>/[ses-<s>/]sub-<label>[_ses-<s>]_desc-<module>_features.tsv   one row of scalar features
    sub-<label>/[ses-<s>/]sub-<label>[_ses-<s>]_desc-<module>_features.json  provenance; written last = "done"
    sub-<label>/[ses-<s>/]sub-<label>[_ses-<s>]_space-<space>_desc-<module><Name>_statmap.nii.gz
    sub-<label>/[ses-<s>/]sub-<label>[_ses-<s>]_desc-<module><Name>_array.npy
    group/<module>_findings.tsv, <module>_clusters.tsv, <module>_<table>.tsv,
    group/<module>_<map>.nii.gz, <module>_<figure>.png, <module>_notes.json
    logs/

Every file is written to a temporary name in its folder and renamed into place, so a killed run
leaves either the old file or the new one, never half of one. A participant's module output
counts as done when its sidecar exists and records the same parameter hash. The sidecar lists
the input runs used and the checksum of every input file.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterable

import nibabel as nib
import numpy as np
import pandas as pd

from . import __version__
from .results import GroupResult, SubjectResult

SPACE = "MNI152NLin2009cAsym"
_UMASK = os.umask(0)
os.umask(_UMASK)


def _camel(name: str) -> str:
    parts = re.split(r"[^0-9A-Za-z]+", name)
    return "".join(p[:1].upper() + p[1:] for p in parts if p)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; outputs are for everyone to read
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(obj):
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return None if not np.isfinite(obj) else float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    return str(obj)


def write_tsv(path: Path, frame: pd.DataFrame, index: bool = False) -> None:
    atomic_write_text(path, frame.to_csv(sep="\t", index=index, na_rep="n/a", lineterminator="\n",
                                         float_format="%.10g"))


def write_nifti(path: Path, img) -> None:
    """Write ``img`` atomically; a ``.nii.gz`` through :func:`gzip_bytes`.

    The data are handed to nibabel in Fortran order, NIfTI's order on disk, so nibabel copies
    contiguous slices (same bytes; half the time of its strided copies of a C-ordered map).
    """
    img = nib.Nifti1Image(np.asfortranarray(np.asanyarray(img.dataobj)), img.affine, img.header)
    data = img.to_bytes()
    if str(path).endswith(".gz"):
        data = gzip_bytes(data)
    atomic_write_bytes(path, data)


def gzip_bytes(data: bytes, level: int = 1) -> bytes:
    """``data`` as one gzip member (RFC 1952, any gzip reader inflates it), deterministic.

    Deflate at ``level`` 1 with zlib's run-length strategy (``Z_RLE``: matches only of the byte
    before): statistical maps are zero outside the brain and noisy floats inside, where longer
    matches are rare. On the 18 maps of a 2 mm participant level this is half the CPU of
    ``gzip.compress(compresslevel=1)`` (0.19 vs 0.36 s) for files 2% smaller; nibabel's own
    default (level 6) costs 2.7x level 1 for files 8% smaller. zlib writes the header with no
    file name and mtime 0, so equal data give equal bytes.

    Examples
    --------
    >>> import gzip
    >>> data = bytes(1000) + bytes(range(256)) * 4
    >>> gzip.decompress(gzip_bytes(data)) == data and gzip_bytes(data) == gzip_bytes(data)
    True
    """
    import zlib
    deflate = zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS, 9, zlib.Z_RLE)
    return deflate.compress(data) + deflate.flush()


def write_npy(path: Path, array: np.ndarray) -> None:
    import io
    buf = io.BytesIO()
    np.save(buf, np.asarray(array), allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())


def file_checksum(path: Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file, remembered per process while its size, inode and mtime are unchanged
    (every module's sidecar lists the checksums of all its participant-session's inputs)."""
    stat = os.stat(path)
    key = (str(path), stat.st_size, stat.st_ino, stat.st_mtime_ns)
    known = _CHECKSUMS.get(key)
    if known is None:            # (another thread may clear the memo meanwhile: keep our own copy)
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(chunk), b""):
                digest.update(block)
        if len(_CHECKSUMS) > 4096:
            _CHECKSUMS.clear()
        known = _CHECKSUMS[key] = digest.hexdigest()
    return known


_CHECKSUMS: dict[tuple, str] = {}


class Derivatives:
    """The painplast derivatives folder ``root``.

    Participant outputs are keyed by participant and session: ``sub-01/ses-pre/sub-01_ses-pre_...``
    for a session, ``sub-01/sub-01_...`` for a dataset without sessions (as BIDS derivatives are).

    Examples
    --------
    >>> import tempfile
    >>> d = Derivatives(tempfile.mkdtemp())
    >>> d.features_path("sub-01", "structure").name
    'sub-01_desc-structure_features.tsv'
    >>> d.features_path("sub-01", "structure", "pre").relative_to(d.root).as_posix()
    'sub-01/ses-pre/sub-01_ses-pre_desc-structure_features.tsv'
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    # ---------------------------------------------------------------- names
    def subject_dir(self, participant_id: str, session: str | None = None) -> Path:
        folder = self.root / participant_id
        return folder / f"ses-{session}" if session else folder

    @staticmethod
    def _prefix(participant_id: str, session: str | None) -> str:
        return participant_id + (f"_ses-{session}" if session else "")

    def features_path(self, participant_id: str, module: str, session: str | None = None) -> Path:
        return (self.subject_dir(participant_id, session)
                / f"{self._prefix(participant_id, session)}_desc-{module}_features.tsv")

    def sidecar_path(self, participant_id: str, module: str, session: str | None = None) -> Path:
        return self.features_path(participant_id, module, session).with_suffix(".json")

    def map_path(self, participant_id: str, module: str, name: str, session: str | None = None,
                 space: str = SPACE) -> Path:
        """``sub-X[_ses-Y]_space-<space>_desc-<module><Name>_statmap.nii.gz`` (``space`` as
        ``--space`` takes it: ``MNI152NLin6Asym:res-2`` is written ``space-MNI152NLin6Asym_res-2``)."""
        space_entities = "_".join([f"space-{space.split(':')[0]}"] + space.split(":")[1:])
        return (self.subject_dir(participant_id, session) / f"{self._prefix(participant_id, session)}_"
                f"{space_entities}_desc-{module}{_camel(name)}_statmap.nii.gz")

    def array_path(self, participant_id: str, module: str, name: str, session: str | None = None) -> Path:
        return (self.subject_dir(participant_id, session)
                / f"{self._prefix(participant_id, session)}_desc-{module}{_camel(name)}_array.npy")

    @property
    def group_dir(self) -> Path:
        return self.root / "group"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    # ---------------------------------------------------------------- dataset
    def initialise(self, source: str | os.PathLike, config_dict: dict) -> None:
        """Create the folder and its dataset_description.json (idempotent)."""
        self.root.mkdir(parents=True, exist_ok=True)
        desc = self.root / "dataset_description.json"
        if not desc.exists():
            write_json(desc, {
                "Name": "painplast derivatives", "BIDSVersion": "1.8.0", "DatasetType": "derivative",
                "GeneratedBy": [{"Name": "painplast", "Version": __version__,
                                 "CodeURL": "https://github.com/painplast/painplast"}],
                "SourceDatasets": [{"URL": Path(source).resolve().as_uri()}],
            })

    # ---------------------------------------------------------------- subject results
    def is_done(self, participant_id: str, module: str, parameter_hash: str, session: str | None = None) -> bool:
        side = self.sidecar_path(participant_id, module, session)
        if not side.exists():
            return False
        try:
            meta = json.loads(side.read_text())
        except ValueError:
            return False
        if meta.get("parameter_hash") != parameter_hash:
            return False
        folder = self.subject_dir(participant_id, session)
        return all((folder / f).exists() for f in meta.get("files", []))

    def write_subject(self, result: SubjectResult, parameters: dict, parameter_hash: str,
                      inputs: Iterable[str | os.PathLike] = (), runs: Iterable[str] = (),
                      space: str = SPACE) -> None:
        """Write one participant-session's module output; the sidecar goes last (the 'done' marker).

        ``runs`` (the input runs used, ``Run.name``) and the SHA-256 of every file of ``inputs``
        are recorded in the sidecar.
        """
        pid, module, ses = result.participant_id, result.module, result.session
        files = []
        keys = {"participant_id": pid, **({"session_id": f"ses-{ses}"} if ses else {})}
        row = pd.DataFrame([{**keys, **{k: float(v) for k, v in result.features.items()}}])
        write_tsv(self.features_path(pid, module, ses), row)
        files.append(self.features_path(pid, module, ses).name)
        maps = {}
        for name, img in result.maps.items():
            path = self.map_path(pid, module, name, ses, space)
            write_nifti(path, img)
            files.append(path.name)
            maps[name] = path.name
        arrays = {}
        for name, arr in result.arrays.items():
            path = self.array_path(pid, module, name, ses)
            write_npy(path, arr)
            files.append(path.name)
            arrays[name] = path.name
        checksums = {}
        for p in inputs:
            p = Path(p)
            if p.exists() and p.is_file():
                checksums[str(p)] = file_checksum(p)
        write_json(self.sidecar_path(pid, module, ses), {
            "painplast_version": __version__, "module": module, "participant_id": pid,
            **({"session": ses} if ses else {}), "runs": list(runs),
            "parameters": parameters, "parameter_hash": parameter_hash,
            "input_checksums": checksums, "files": files, "maps": maps, "arrays": arrays,
            "info": dict(result.info),
        })

    def read_subject(self, participant_id: str, module: str, session: str | None = None) -> SubjectResult | None:
        """Read back a participant-session's module output (maps are loaded lazily), or None."""
        side = self.sidecar_path(participant_id, module, session)
        if not side.exists():
            return None
        meta = json.loads(side.read_text())
        table = pd.read_csv(self.features_path(participant_id, module, session), sep="\t", na_values="n/a",
                            keep_default_na=False)
        feats = {c: float(table[c].iloc[0]) for c in table.columns if c not in ("participant_id", "session_id")}
        sub = self.subject_dir(participant_id, session)
        maps = {n: nib.load(sub / f) for n, f in meta.get("maps", {}).items()}
        arrays = {n: np.load(sub / f, allow_pickle=False) for n, f in meta.get("arrays", {}).items()}
        return SubjectResult(module, participant_id, feats, maps, arrays, meta.get("info", {}), session)

    def _failure_path(self, participant_id: str, module: str, session: str | None) -> Path:
        return self.logs_dir / "skipped" / f"{self._prefix(participant_id, session)}_{module}.json"

    def write_failure(self, participant_id: str, module: str, reason: str, session: str | None = None) -> None:
        write_json(self._failure_path(participant_id, module, session),
                   {"participant_id": participant_id, "session": session, "module": module, "reason": reason})

    def clear_failure(self, participant_id: str, module: str, session: str | None = None) -> None:
        """Forget an earlier failure of this stage (it works now)."""
        self._failure_path(participant_id, module, session).unlink(missing_ok=True)

    def failures(self) -> pd.DataFrame:
        rows = []
        for p in sorted((self.logs_dir / "skipped").glob("*.json")):
            try:
                rows.append(json.loads(p.read_text()))
            except ValueError:
                continue
        return pd.DataFrame(rows, columns=["participant_id", "session", "module", "reason"])

    # ---------------------------------------------------------------- group results
    def write_group(self, result: GroupResult, parameters: dict, extra: dict | None = None) -> list[Path]:
        g, m = self.group_dir, result.module
        written = [g / f"{m}_findings.tsv"]
        write_tsv(written[-1], result.findings)
        if result.clusters is not None:
            written.append(g / f"{m}_clusters.tsv")
            write_tsv(written[-1], result.clusters)
        for name, table in result.tables.items():
            written.append(g / f"{m}_{name}.tsv")
            write_tsv(written[-1], table)
        for name, img in result.maps.items():
            written.append(g / f"{m}_{name}.nii.gz")
            write_nifti(written[-1], img)
        for name, png in result.figures.items():
            written.append(g / f"{m}_{name}.png")
            atomic_write_bytes(written[-1], png)
        written.append(g / f"{m}_notes.json")
        write_json(written[-1], {"painplast_version": __version__, "module": m,
                                 "parameters": parameters, "notes": list(result.notes),
                                 "files": [p.name for p in written[:-1]], **(extra or {})})
        return written
