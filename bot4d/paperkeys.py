"""Paper-trading API credentials: a random key and secret the simulated venue and the paper
config share, created on first use so no credential is ever committed to the repository."""
from __future__ import annotations

import os
import secrets
from pathlib import Path

KEY_NAME = "paper.key"
SECRET_NAME = "paper.secret"


def _ensure_one(path: Path) -> None:
    try:
        if path.stat().st_size > 0:
            return
        replace = True  # an empty file is a creation interrupted before its write
    except FileNotFoundError:
        replace = False
    # write a private temporary file, then link it into place: the final name never exists
    # half-written, and two concurrent callers cannot both win (link refuses an existing name)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")  # 64 characters, the shape of a Binance key
            f.flush()
            os.fsync(f.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass  # another process created it first; its value stands
    finally:
        tmp.unlink(missing_ok=True)


def ensure(dir: Path) -> tuple[Path, Path]:
    """Create ``dir/paper.key`` and ``dir/paper.secret`` (mode 0600) if missing; return their paths."""
    dir = Path(dir)
    dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    key, secret = dir / KEY_NAME, dir / SECRET_NAME
    _ensure_one(key)
    _ensure_one(secret)
    return key, secret
