import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("NUMBA_CACHE_DIR", str(ROOT / ".numba_cache"))

# ../shared/ sits beside the repository on developer machines and in CI.
SHARED = ROOT.parent / "shared"
RECORDED = SHARED / "data" / "recorded"
