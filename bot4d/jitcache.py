"""Keep numba's on-disk cache honest about code compiled in from other modules.

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

import numba


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
