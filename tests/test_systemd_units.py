"""The shipped units render and pass `systemd-analyze verify` (systemd is installed, not PID 1).

systemd cannot start units here, so what the units promise is checked with the kernel mechanisms
systemd would use: prctl(PR_SET_MDWE) for MemoryDenyWriteExecute=, real processes switched to the
units' users, groups and umasks for who can read the segments, and the exporter's real command
line for what it serves.
"""
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from bot4d.units import UNIT_DIR, render, render_all

BINDIR = str(Path(sys.executable).parent)  # the venv's bot4d / bot4d-persist scripts exist here

needs_systemd = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                   reason="systemd-analyze is not installed")


@needs_systemd
def test_units_pass_systemd_analyze_verify(tmp_path):
    units = render_all(BINDIR, tmp_path)
    assert {u.name for u in units} == {"bot4d.service", "bot4d-persist.service", "bot4d-exporter.service"}
    for u in units:
        for cmd in unit_settings(u.read_text())["ExecStart"]:
            assert Path(cmd.split()[0]).exists(), cmd
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


REPO = UNIT_DIR.parent
VENV = Path(sys.executable).parent.parent


def unit_settings(text: str) -> dict[str, list[str]]:
    """Every `Key=value` of a unit, in order, each key's values in a list (comments dropped)."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise ValueError(f"not a Key=value line: {line!r}")
        out.setdefault(key, []).append(value)
    return out


def rendered(name: str) -> dict[str, list[str]]:
    return unit_settings(render((UNIT_DIR / f"{name}.in").read_text(), BINDIR))


def test_unit_settings_rejects_a_line_without_equals():
    with pytest.raises(ValueError, match="not a Key=value"):
        unit_settings("[Service]\nExecStart /bin/true\n")


def make_install_files(destdir: Path) -> subprocess.CompletedProcess:
    # PREFIX is this venv so that the rendered ExecStart= binaries exist for `verify`
    return subprocess.run(["make", "-s", "install-files", f"DESTDIR={destdir}", f"PREFIX={VENV}",
                           f"PYTHON={sys.executable}"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)


@needs_systemd
@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_install_stages_every_file_and_units_verify(tmp_path):
    dest = tmp_path / "root"
    r = make_install_files(dest)
    assert r.returncode == 0, r.stderr
    unitdir = dest / "etc/systemd/system"
    units = sorted(unitdir.glob("*.service"))
    assert [u.name for u in units] == ["bot4d-exporter.service", "bot4d-persist.service", "bot4d.service"]
    for f in ("usr/lib/sysusers.d/bot4d.conf", "usr/lib/tmpfiles.d/bot4d.conf",
              "etc/bot4d/persist.env.example", "etc/bot4d/exporter.env.example"):
        assert (dest / f).is_file(), f
    assert (dest / "usr/lib/sysusers.d/bot4d.conf").read_text() == (UNIT_DIR / "bot4d.sysusers.conf").read_text()
    for u in units:
        assert "@BINDIR@" not in u.read_text() and f"ExecStart={VENV}/bin/" in u.read_text()
    v = subprocess.run(["systemd-analyze", "verify", *map(str, units)], capture_output=True, text=True)
    assert v.returncode == 0, v.stderr
    assert "Unknown" not in v.stderr and "not executable" not in v.stderr, v.stderr

    example = REPO / "config/example.toml"
    conf = dest / "etc/bot4d/bot4d.toml"
    if example.is_file():  # another change adds it; until then install must still succeed
        assert conf.read_text() == example.read_text()
    else:
        assert not conf.exists()
    # an operator's configuration survives a re-install
    conf.write_text("# edited by the operator\n")
    assert make_install_files(dest).returncode == 0
    assert conf.read_text() == "# edited by the operator\n"


def test_daemon_unit_runs_the_documented_command():
    s = rendered("bot4d.service")
    assert s["ExecStart"] == [f"{BINDIR}/bot4d run --config /etc/bot4d/bot4d.toml"]
    assert s["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert s["KillSignal"] == ["SIGTERM"] and s["TimeoutStopSec"]
    assert s["NotifyAccess"] == ["main"]
    creds = [c.split(":", 1) for c in s["LoadCredential"]]
    assert len(creds) >= 2 and all(path.startswith("/etc/bot4d/credentials/") for _, path in creds)


def test_exporter_unit_contract():
    s = rendered("bot4d-exporter.service")
    assert s["User"] == ["bot4d-exporter"] and s["Group"] == ["bot4d-monitor"]
    assert s["Restart"] == ["on-failure"]
    assert "bot4d.service" in " ".join(s["After"]) and "bot4d.service" in " ".join(s["Wants"])
    # the exporter must outlive the daemon to report bot4d_up 0
    for key in ("BindsTo", "Requires", "Requisite", "PartOf"):
        assert key not in s, key
    assert s["EnvironmentFile"] == ["-/etc/bot4d/exporter.env"]
    assert set(s["RestrictAddressFamilies"][0].split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}
    for key, value in (("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"), ("PrivateTmp", "yes"),
                       ("ProtectHome", "yes"), ("PrivateDevices", "no"), ("PrivateIPC", "no"),
                       ("ReadOnlyPaths", "/dev/shm"), ("CapabilityBoundingSet", "")):
        assert s[key] == [value], key
    assert "AmbientCapabilities" not in s or s["AmbientCapabilities"] == [""]


def expand(cmd: str, env: dict[str, str]) -> list[str]:
    """systemd's ${VAR} expansion in ExecStart= (words only, which is all the units use)."""
    def sub(m: re.Match) -> str:
        if m.group(1) not in env:
            raise KeyError(f"ExecStart= uses ${{{m.group(1)}}}, which the unit never sets")
        return env[m.group(1)]
    return [re.sub(r"\$\{(\w+)\}", sub, w) for w in cmd.split()]


def unit_environment(s: dict[str, list[str]], env_file: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in s.get("Environment", []):
        for word in line.split():
            k, _, v = word.partition("=")
            env[k] = v
    for line in env_file.read_text().splitlines():  # EnvironmentFile= overrides Environment=
        if line.strip() and not line.startswith("#"):
            k, _, v = line.partition("=")
            env[k.strip()] = v.strip()
    return env


def test_expand_refuses_an_unset_variable():
    with pytest.raises(KeyError, match="NOPE"):
        expand("/bin/x --a ${NOPE}", {})


def test_exporter_command_line_serves_up_0_without_a_daemon(tmp_path):
    s = rendered("bot4d-exporter.service")
    env_file = tmp_path / "exporter.env"
    # the shipped example, with a free port and an instance no daemon runs
    text = (UNIT_DIR / "exporter.env.example").read_text()
    text = text.replace("BOT4D_EXPORTER_LISTEN=127.0.0.1:9464", "BOT4D_EXPORTER_LISTEN=127.0.0.1:0")
    text = text.replace("BOT4D_INSTANCE=main", f"BOT4D_INSTANCE=unitsnone{os.getpid()}")
    env_file.write_text(text)
    env = unit_environment(s, env_file)
    assert "9464" in unit_environment(s, UNIT_DIR / "exporter.env.example")["BOT4D_EXPORTER_LISTEN"]
    argv = expand(s["ExecStart"][0], env)
    p = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "NUMBA_CACHE_DIR": os.environ.get("NUMBA_CACHE_DIR", "")})
    try:
        port = None
        for line in p.stderr:  # bounded by the exporter's own start; a dead process ends the loop
            m = re.search(r"serving http://127\.0\.0\.1:(\d+)/metrics", line)
            if m:
                port = int(m.group(1))
                break
        assert port is not None, f"exporter exited with {p.wait(timeout=30)}"
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30).read().decode()
        assert re.search(r'^bot4d_up\{instance="unitsnone\d+"\} 0\.0$', body, re.M), body
        p.send_signal(signal.SIGTERM)  # systemd's stop: it must exit cleanly, not be killed
        assert p.wait(timeout=30) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1
MDWE_CHILD = """
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
if sys.argv[1] == "mdwe" and libc.prctl({set}, {refuse}, 0, 0, 0) != 0:
    print("NO_MDWE"); sys.exit(3)
try:
    __import__(sys.argv[2])
except OSError as e:
    print("REFUSED", e); sys.exit(4)
print("IMPORTED")
""".format(set=PR_SET_MDWE, refuse=PR_MDWE_REFUSE_EXEC_GAIN)


def import_under(mode: str, module: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", MDWE_CHILD, mode, module], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


# the program each unit runs, and the module that program imports on its run path
UNIT_PROGRAMS = {"bot4d-exporter.service": "bot4d.monitor.exporter",
                 "bot4d-persist.service": "bot4d.persist.sidecar",
                 "bot4d.service": "ipc.ring"}


@pytest.mark.parametrize("unit", sorted(UNIT_PROGRAMS))
def test_memory_deny_write_execute_matches_what_the_program_imports(unit):
    module = UNIT_PROGRAMS[unit]
    free = import_under("plain", module)
    assert free.returncode == 0 and "IMPORTED" in free.stdout, free.stdout + free.stderr
    r = import_under("mdwe", module)
    if r.returncode == 3:
        pytest.skip("kernel has no PR_SET_MDWE (Linux < 6.3)")
    mdwe = rendered(unit).get("MemoryDenyWriteExecute", ["no"])[-1]
    if r.returncode == 4:  # numba needs W+X memory: the unit must not forbid it
        assert "cannot allocate executable memory" in r.stdout
        assert mdwe == "no", f"{unit}: {module} dies under MemoryDenyWriteExecute=yes"
    else:
        assert r.returncode == 0, r.stderr


def sysusers_groups(user: str) -> set[str]:
    text = (UNIT_DIR / "bot4d.sysusers.conf").read_text()
    return {ln.split()[2] for ln in text.splitlines() if ln.startswith("m ") and ln.split()[1] == user}


def test_sysusers_exporter_user_is_a_monitor():
    text = (UNIT_DIR / "bot4d.sysusers.conf").read_text()
    assert re.search(r"^u bot4d-exporter ", text, re.M)
    assert "bot4d-monitor" in sysusers_groups("bot4d-exporter")


def as_user(uid: int, gid: int, groups: list[int], umask: int, action) -> int:
    """Run ``action()`` in a forked child with these credentials; its return value is the exit code.

    A fork, not a new interpreter: the venv's python lives under root's home, which the
    unprivileged ids cannot traverse, and the parent's compiled ipc kernels come along.
    """
    pid = os.fork()
    if pid == 0:
        code = 99
        try:
            os.setgroups(groups)
            os.setgid(gid)
            os.setuid(uid)
            os.umask(umask)
            code = action()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to the units' users needs root")
def test_exporter_can_read_what_the_daemon_and_sidecar_create():
    from ipc.segment import Segment

    # fake numeric ids stand for the sysusers names: the kernel checks numbers, not names
    gids = {"bot4d": 64900, "bot4d-monitor": 64901, "bot4d-operator": 64902, "bot4d-admin": 64903}
    exporter = rendered("bot4d-exporter.service")
    reader_gid = gids[exporter["Group"][0]]
    reader_groups = [gids[g] for g in sorted(sysusers_groups("bot4d-exporter"))]
    instance = f"unitsperm{os.getpid()}"
    Segment.create(instance, "warm", 64, {"kind": "probe"}).unlink()  # compile before forking

    def create() -> int:
        Segment.create(instance, "probe", 64, {"kind": "probe"}).close()
        return 0

    def attach() -> int:
        try:
            Segment.attach(instance, "probe", readonly=True).close()
        except PermissionError:
            return 5
        return 0
    try:
        for unit in ("bot4d.service", "bot4d-persist.service"):
            s = rendered(unit)
            assert as_user(64800, gids[s["Group"][0]], [], int(s["UMask"][0], 8), create) == 0
            assert as_user(64801, reader_gid, reader_groups, 0o077, attach) == 0, \
                f"{unit}: the exporter cannot read the segments it creates"
            # control: a user outside the monitor group is refused, so the check above can fail
            assert as_user(64802, gids["bot4d-operator"], [], 0o077, attach) == 5
            os.unlink(f"/dev/shm/bot4d.{instance}.probe")
    finally:
        for p in Path("/dev/shm").glob(f"bot4d.{instance}.*"):
            p.unlink()


def test_the_sidecar_stops_after_the_daemon_so_shutdown_can_wait_for_persistence():
    """Units stop in the reverse of their start order: with Before=bot4d.service the daemon stops
    first and its SIGTERM wait (persist.shutdown_wait_s) finds the sidecar still draining."""
    s = rendered("bot4d-persist.service")
    assert "bot4d.service" in " ".join(s["Before"]) and "bot4d.service" not in " ".join(s.get("After", []))
    assert s["PartOf"] == ["bot4d.service"]
