"""Large scratch arrays reused within and between participant levels instead of fresh memory.

A 2 mm run of 300 volumes is a (T, V) float32 array of ~280 MB; the participant level of one
participant reads four such runs, smooths three of them and forms two (p, V) product arrays per
GLM: about 2.5 GB of arrays that each live for one run. Fresh memory is paid for at its first
touch (the kernel clears it; numpy asks for huge pages for arrays of 4 MB or more, and on a
virtual machine whose memory is backed lazily the host backs each new page too). On the machine
of benchmarks/RESULTS.md a fresh 280 MB array cost 0.6 s of system time to fill, a reused one
none. :func:`empty` hands out such arrays from buffers that earlier arrays released inside a
:func:`reusing` block (the engine's participant level).

When the outermost block ends the free buffers are kept for :data:`KEEP_SECONDS` more: a
worker's next participant (a joblib or dask worker runs one participant after another) starts
within that time and reuses them, instead of paying for ~1.5 GB of fresh memory again (0.3-1 s
of system time per participant on that machine). The memory is the peak the participant level
had anyway; it is returned when the time runs out, at :func:`release`, or when the process ends.

An array from :func:`empty` is like ``np.empty``'s: its values are undefined. Once the array is
gone, its buffer serves a later request of about its size, but only when no view of the array is
still alive (the buffer's reference count says so); otherwise the buffer is left to Python.

Examples
--------
>>> with reusing():
...     a = empty((300, 40000), np.float32)                      # 48 MB
...     address = a.ctypes.data
...     del a
...     empty((300, 39000), np.float32).ctypes.data == address    # the same memory, reused
True
>>> with reusing():                                              # a next block, soon after
...     empty((300, 40000), np.float32).ctypes.data == address
True
>>> release()                                                    # the buffers go back now
>>> empty((2, 2), np.float32).shape                                # outside a block: np.empty
(2, 2)
"""
from __future__ import annotations

import contextlib
import sys
import threading
import weakref

import numpy as np

#: Arrays smaller than this come from ``np.empty`` (their first touch is cheap).
MIN_BYTES = 1 << 25
#: A free buffer serves a request at most this much larger than its size.
SLACK = 1.25
#: Seconds the free buffers outlive the last block (for a worker's next participant level).
KEEP_SECONDS = 60.0

_LOCK = threading.Lock()
_STATE = {"depth": 0, "free": [], "used": [], "limit": 0, "timer": None}


def _references(entry) -> int:
    return sys.getrefcount(entry[0])


#: References to a buffer that nothing else holds, as :func:`_collect` counts them.
_ALONE = _references((np.empty(1, np.uint8), None))


def _collect() -> None:
    """Move the buffers of arrays that died to the free list (call with the lock held).

    A buffer whose array died but that is still referenced (a view of the array is alive, its
    ``base`` is the buffer) is dropped from the pool and left to Python; the free list keeps at
    most the block's limit, the oldest going back to the system first.
    """
    used, free = _STATE["used"], _STATE["free"]
    keep = []
    for entry in used:
        if entry[1]() is not None:
            keep.append(entry)
        elif _references(entry) <= _ALONE:
            free.append(entry[0])
    used[:] = keep
    while free and sum(b.nbytes for b in free) > _STATE["limit"]:
        free.pop(0)


def empty(shape, dtype=np.float64) -> np.ndarray:
    """An uninitialised array, in a released buffer of a :func:`reusing` block when one fits."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    if nbytes < MIN_BYTES:
        return np.empty(shape, dtype)
    with _LOCK:
        if not _STATE["depth"]:
            return np.empty(shape, dtype)
        _collect()
        free = _STATE["free"]
        fits = [i for i, raw in enumerate(free) if nbytes <= raw.nbytes <= SLACK * nbytes]
        raw = free.pop(min(fits, key=lambda i: free[i].nbytes)) if fits else np.empty(nbytes, np.uint8)
        array = raw[:nbytes].view(dtype).reshape(shape)
        _STATE["used"].append((raw, weakref.ref(array)))
    return array


@contextlib.contextmanager
def reusing(limit_bytes: int = 3 << 29):
    """Reuse the buffers of large arrays released inside this block (at most ``limit_bytes`` kept
    free at once). Blocks may nest and may be entered from several threads; when the outermost
    block ends, the free buffers are kept :data:`KEEP_SECONDS` for the next block, then freed."""
    with _LOCK:
        if _STATE["timer"] is not None:
            _STATE["timer"].cancel()
            _STATE["timer"] = None
        _STATE["depth"] += 1
        _STATE["limit"] = max(_STATE["limit"], int(limit_bytes))
    try:
        yield
    finally:
        with _LOCK:
            _STATE["depth"] -= 1
            if not _STATE["depth"]:
                _collect()
                _STATE["used"].clear()        # arrays still alive leave the pool with their buffers
                if _STATE["free"] and KEEP_SECONDS > 0:
                    timer = threading.Timer(KEEP_SECONDS, release)
                    timer.daemon = True
                    _STATE["timer"] = timer
                    timer.start()
                else:
                    _release()


def release() -> None:
    """Free the kept buffers now; inside a block it does nothing (the block's end decides)."""
    with _LOCK:
        if not _STATE["depth"]:
            _release()


def _release() -> None:
    """(With the lock held, outside every block.)"""
    if _STATE["timer"] is not None:
        _STATE["timer"].cancel()
        _STATE["timer"] = None
    _STATE["free"].clear()
    _STATE["used"].clear()
    _STATE["limit"] = 0
