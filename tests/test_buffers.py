"""The pool of large scratch arrays (painplast.plasticity._buffers): reuse within a block, between
blocks for KEEP_SECONDS, and release after."""
import time

import numpy as np
import pytest

from painplast.plasticity import _buffers


@pytest.fixture
def short_keep(monkeypatch):
    _buffers.release()
    monkeypatch.setattr(_buffers, "KEEP_SECONDS", 0.3)
    yield
    _buffers.release()


def _big():
    return _buffers.empty((100, _buffers.MIN_BYTES // 400 + 1), np.float32)


def test_buffers_are_kept_for_the_next_block_then_freed(short_keep):
    with _buffers.reusing():
        a = _big()
        a[...] = 1.0
        address = a.ctypes.data
        del a
    assert [b.ctypes.data for b in _buffers._STATE["free"]] == [address]
    with _buffers.reusing():                      # soon after: the same memory
        b = _big()
        assert b.ctypes.data == address
        del b
    deadline = time.monotonic() + 5.0
    while _buffers._STATE["free"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _buffers._STATE["free"]            # KEEP_SECONDS later: returned
    assert _buffers._STATE["timer"] is None or not _buffers._STATE["timer"].is_alive()


def test_a_live_array_or_view_keeps_its_buffer_out_of_the_pool(short_keep):
    with _buffers.reusing():
        a = _big()
        view = a[:10]
        del a
        c = _big()                                # the first array's buffer is still seen
        assert c.ctypes.data != view.ctypes.data
        del c
    assert all(b.ctypes.data != view.ctypes.data for b in _buffers._STATE["free"])
    view[...] = 2.0                               # still the caller's memory
    with _buffers.reusing():
        d = _big()
        assert d.ctypes.data != view.ctypes.data
    assert float(view.sum()) == 2.0 * view.size


def test_release_frees_at_once_and_outside_a_block_empty_is_numpy(short_keep):
    with _buffers.reusing():
        _big()
    assert _buffers._STATE["free"]
    _buffers.release()
    assert not _buffers._STATE["free"]
    outside = _big()                              # outside a block: plain np.empty, not pooled
    assert outside.base is None and not _buffers._STATE["used"]
