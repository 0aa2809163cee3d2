"""How bot4d compiles kernels (bot4d.jitcache): one specialisation per array-type set, helpers with
no Python entry, and a stale cross-module cache dropped."""
from __future__ import annotations

import numpy as np
import pytest

from bot4d.jitcache import drop_stale_cache, helper, kernel

K_LIMIT = 7   # a module constant: numba types it as a literal of its own value


# cache=False: compiled in this process every run, so its specialisations can be counted
@helper(cache=False)
def _scaled(a, k, m):
    return a[0] * k + m


@kernel(cache=False)
def entry(a, small):
    # an int8 from an array, a literal, a module constant and an int64: one signature in all
    return (_scaled(a, small[0], 3) + _scaled(a, K_LIMIT, np.int64(2)) + _scaled(a, 1, small[1])
            + _scaled(a, np.int32(5), np.uint8(1)))


def test_kernel_to_kernel_calls_compile_one_specialisation():
    a = np.array([10], np.int64)
    assert entry(a, np.array([2, 4], np.int8)) == 23 + 72 + 14 + 51
    assert len(_scaled.signatures) == 1
    assert all(str(t) == "int64" for t in _scaled.signatures[0][1:])


def test_a_helper_called_from_python_is_a_clear_error_not_a_crash():
    entry(np.array([1], np.int64), np.array([1, 1], np.int8))   # compiled, with no Python wrapper
    with pytest.raises(TypeError, match="kernel helper"):
        _scaled(np.array([1], np.int64), 2, 3)


def test_a_kernel_stays_callable_from_python():
    assert entry(np.array([1], np.int64), np.array([0, 0], np.int8)) == 3 + 9 + 1 + 6


def test_a_changed_dependency_drops_the_cache(tmp_path, monkeypatch):
    import numba
    monkeypatch.setattr(numba.config, "CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "cache").mkdir()
    mod, dep = tmp_path / "mod.py", tmp_path / "dep.py"
    mod.write_text("x = 1\n")
    dep.write_text("y = 1\n")
    assert drop_stale_cache(str(mod), [str(dep)]) is False        # first sight: stamped, nothing to drop
    (tmp_path / "cache" / "mod.entry-1.py311.nbi").write_bytes(b"")
    assert drop_stale_cache(str(mod), [str(dep)]) is False        # unchanged: kept
    dep.write_text("y = 2\n")
    assert drop_stale_cache(str(mod), [str(dep)]) is True
    assert not (tmp_path / "cache" / "mod.entry-1.py311.nbi").exists()
