"""``make audit``: a CycloneDX SBOM of the venv and a vulnerability audit that never fakes a pass.

pip-audit exits 0 when it could not reach its advisory service (NOTES.md): every package comes back
"skipped". This wrapper reads pip-audit's JSON and reports three outcomes plainly:
vulnerabilities found (exit 1), nothing could be checked (exit 2, "NOT AUDITED"), or a real pass
over every package (exit 0). A partial check names the packages it could not check (exit 2).
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def write_sbom(out: Path) -> None:
    subprocess.run(
        [str(BIN / "cyclonedx-py"), "environment", "--output-format", "JSON", "-o", str(out), sys.executable],
        check=True,
    )
    n = len(json.loads(out.read_text()).get("components", []))
    print(f"SBOM: {out} ({n} components, CycloneDX JSON)")


def run_pip_audit() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as d:
        report = Path(d) / "audit.json"
        proc = subprocess.run(
            [str(BIN / "pip-audit"), "--progress-spinner", "off", "-f", "json", "-o", str(report)],
            capture_output=True, text=True, timeout=900,
        )
        if not report.exists():
            raise RuntimeError(f"pip-audit produced no report (exit {proc.returncode}): {proc.stderr.strip()}")
        return json.loads(report.read_text())


def judge(report: dict[str, Any]) -> tuple[int, str]:
    """Exit code and verdict for a pip-audit JSON report."""
    deps = report.get("dependencies", [])
    skipped = [d for d in deps if d.get("skip_reason")]
    checked = [d for d in deps if not d.get("skip_reason")]
    vulnerable = [d for d in checked if d.get("vulns")]
    lines = []
    for d in vulnerable:
        ids = ", ".join(v.get("id", "?") for v in d["vulns"])
        lines.append(f"  {d['name']} {d.get('version', '')}: {ids}")
    if vulnerable:
        return 1, f"VULNERABLE: {len(vulnerable)} package(s) with known advisories:\n" + "\n".join(lines)
    if deps and not checked:
        return 2, (
            f"NOT AUDITED: the advisory service could not be reached or knew none of the "
            f"{len(deps)} packages (first reason: {skipped[0]['skip_reason']}). This is not a pass."
        )
    if skipped:
        names = ", ".join(d["name"] for d in skipped)
        return 2, f"PARTIAL: {len(checked)} packages checked with no advisories; NOT checked: {names}"
    return 0, f"PASS: {len(checked)} packages checked, no known vulnerabilities"


def main() -> int:
    write_sbom(ROOT / "sbom.json")
    try:
        code, verdict = judge(run_pip_audit())
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        code, verdict = 2, f"NOT AUDITED: pip-audit failed: {e}"
    print(verdict)
    return code


if __name__ == "__main__":
    sys.exit(main())
