"""How bot4d compiles its numba kernels: once per argument-type set, cached honestly.

``kernel`` and ``helper`` are the decorators for every kernel in bot4d (see "how kernels are
compiled" below). The rest keeps numba's on-disk cache honest about code compiled in from other
modules.

numba keys a kernel's cache on the kernel's own source file only: a kernel that calls into another
module (a venue scanner into the book, the backtest into the OMS) keeps running the *old* callee
after that module is edited, until its own file changes. A module with such kernels calls
``drop_stale_cache(__file__, [dependency files])`` at import: a stamp of the sources is kept beside
the cache, and on a mismatch the module's cached kernels are removed before their first call.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import numba
from numba.core import event, types
from numba.core.registry import CPUDispatcher


def drop_stale_cache(module_file: str, deps: list[str]) -> bool:
    """Remove ``module_file``'s cached kernels if it or any of ``deps`` changed. True if dropped."""
    h = hashlib.sha256()
    for d in [module_file, *deps]:
        h.update(Path(d).read_bytes())
    stamp = h.hexdigest()
    name = Path(module_file).stem
    root = Path(numba.config.CACHE_DIR) if numba.config.CACHE_DIR else Path(module_file).parent / "__pycache__"
    if not root.is_dir():
        return False
    mark = root / f"{name}.deps-stamp"
    if mark.exists() and mark.read_text() == stamp:
        return False
    dropped = False
    for f in root.rglob(f"{name}.*"):
        if f.suffix in (".nbi", ".nbc"):
            f.unlink(missing_ok=True)
            dropped = True
    try:
        mark.write_text(stamp)
    except OSError:  # a read-only cache: numba will not write there either
        pass
    return dropped


def files(*modules: ModuleType) -> list[str]:
    return [m.__file__ for m in modules if m.__file__]


# --- how kernels are compiled ---------------------------------------------------------------------
# numba types a call from one kernel to another with the caller's exact argument types: an int8
# read from an array, an int32, a module constant (a literal: each value its own type) each make a
# new specialisation of the callee, compiled and linked again. The OMS's journal writer was compiled
# 56 times that way. ``kernel`` and ``helper`` type integer arguments of such calls as int64 (what
# the kernels compute in anyway), so a kernel is compiled once per set of array types.
# A helper (a kernel only other kernels call) is also built without the CPython and C entry
# wrappers: for kernels that take the OMS's tuple of ~70 arrays, the wrappers that unbox it from
# Python (entry points nothing used) were most of what was left: the OMS took 160 s with them and
# 59 s without, once its calls were typed once.

def _widen(t: types.Type) -> types.Type:
    t = types.unliteral(t)
    if isinstance(t, types.Integer) and (t.signed or t.bitwidth < 64):
        return types.int64
    return t


class KernelDispatcher(CPUDispatcher):
    """A CPU dispatcher whose kernel-to-kernel calls are typed with int64 integer arguments."""

    def get_call_template(self, args, kws):  # type: ignore[override]
        return super().get_call_template(tuple(_widen(a) for a in args),
                                         {k: _widen(v) for k, v in kws.items()})


class HelperDispatcher(KernelDispatcher):
    """A kernel with no entry from Python: a Python call would jump into a missing wrapper."""

    def __call__(self, *args, **kws):  # type: ignore[override]
        raise TypeError(f"{self.py_func.__module__}.{self.py_func.__qualname__} is a kernel helper: "
                        "only other kernels call it (decorate it with bot4d.jitcache.kernel to call "
                        "it from Python)")


def _dispatcher(cls: type, fn: Callable | None, options: dict[str, Any]):
    opts = {"nopython": True, "nogil": True, "boundscheck": None, **options}
    cache = opts.pop("cache", True)

    def wrap(f: Callable):
        if numba.config.DISABLE_JIT:
            return f
        d = cls(py_func=f, locals={}, targetoptions=opts)
        if cache:
            d.enable_caching()
        return d
    return wrap(fn) if fn is not None else wrap


def kernel(fn: Callable | None = None, **options: Any):
    """``numba.njit(cache=True, nogil=True, **options)``, called from Python and from kernels, with
    kernel-to-kernel calls typed once (see above)."""
    return _dispatcher(KernelDispatcher, fn, options)


def helper(fn: Callable | None = None, **options: Any):
    """A kernel only other kernels call: as ``kernel``, without Python or C entry wrappers."""
    return _dispatcher(HelperDispatcher, fn, {"no_cpython_wrapper": True, "no_cfunc_wrapper": True,
                                               **options})


class CompileCounter(event.Listener):
    """Counts numba compilations while installed (``with CompileCounter() as c: ...; c.count``):
    after set-up a daemon start compiles nothing, and one that does says so."""

    def __init__(self) -> None:
        self.count = 0
        self.names: list[str] = []

    def on_start(self, ev: event.Event) -> None:
        d = ev.data.get("dispatcher")
        self.count += 1
        if d is not None and len(self.names) < 20:
            self.names.append(f"{d.py_func.__module__}.{d.py_func.__qualname__}")

    def on_end(self, ev: event.Event) -> None:
        pass

    def __enter__(self) -> "CompileCounter":
        event.register("numba:compile", self)
        return self

    def __exit__(self, *exc: object) -> None:
        event.unregister("numba:compile", self)
