"""Render the systemd unit templates in ``systemd/`` for an install location."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
UNIT_DIR = ROOT / "systemd"


def render(template: str, bindir: str) -> str:
    if "@BINDIR@" not in template:
        raise ValueError("template has no @BINDIR@ placeholder")
    return template.replace("@BINDIR@", bindir.rstrip("/"))


def render_all(bindir: str, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for t in sorted(UNIT_DIR.glob("*.service.in")):
        dest = out_dir / t.name[: -len(".in")]
        dest.write_text(render(t.read_text(), bindir))
        written.append(dest)
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bindir", required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    for p in render_all(args.bindir, args.out):
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
