"""The shipped units render and pass `systemd-analyze verify` (systemd is installed, not PID 1)."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bot4d.units import UNIT_DIR, render, render_all

BINDIR = str(Path(sys.executable).parent)  # the venv's bot4d / bot4d-persist scripts exist here

needs_systemd = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                   reason="systemd-analyze is not installed")


@needs_systemd
def test_units_pass_systemd_analyze_verify(tmp_path):
    units = render_all(BINDIR, tmp_path)
    assert {u.name for u in units} == {"bot4d.service", "bot4d-persist.service"}
    for u in units:
        assert (Path(BINDIR) / u.read_text().split("ExecStart=")[1].split()[0].split("/")[-1]).exists()
    r = subprocess.run(["systemd-analyze", "verify", *map(str, units)], capture_output=True, text=True)
    # verify prints only problems; an unknown directive or a missing binary fails it
    assert r.returncode == 0, r.stderr
    assert "Unknown" not in r.stderr and "not executable" not in r.stderr, r.stderr


@needs_systemd
def test_verify_catches_a_broken_unit(tmp_path):
    bad = render((UNIT_DIR / "bot4d.service.in").read_text(), "/nonexistent/bin")
    p = tmp_path / "bot4d.service"
    p.write_text(bad)
    r = subprocess.run(["systemd-analyze", "verify", str(p)], capture_output=True, text=True)
    assert r.returncode != 0 and "not executable" in r.stderr


def test_daemon_unit_has_the_service_contract():
    text = (UNIT_DIR / "bot4d.service.in").read_text()
    for line in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "CPUAffinity=",
                 "LimitMEMLOCK=infinity", "User=bot4d", "RuntimeDirectory=bot4d",
                 "StateDirectory=bot4d", "ConfigurationDirectory=bot4d", "LoadCredential=",
                 "NoNewPrivileges=yes", "ProtectSystem=strict", "RemoveIPC=no", "PrivateDevices=no"):
        assert line in text, line
    # secrets reach the daemon only as credentials, never through the environment
    env_lines = [ln for ln in text.splitlines() if ln.startswith(("Environment=", "EnvironmentFile="))]
    assert not any("SECRET" in ln.upper() or "API" in ln.upper() for ln in env_lines)


def test_sysusers_declares_user_and_role_groups():
    text = (UNIT_DIR / "bot4d.sysusers.conf").read_text()
    for needle in ("u bot4d", "g bot4d-monitor", "g bot4d-operator", "g bot4d-admin"):
        assert needle in text
