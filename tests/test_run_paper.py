"""``bot4d run-paper``: its children die with it, and a child that exits early stops it loudly.

Reported: run-paper started its children in sessions of their own; when it died abnormally they
lived on (an orphaned bot4d-persist held its journal slot, so the next ``make run`` ran without
persistence). Real processes: run-paper, the simulated venue and the daemon, on free loopback
ports of their own (``--no-persist``: PostgreSQL is a server pg_ctl detaches, not a child)."""
from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from tests.daemon_harness import PY, Stack, wait_for


def _children(pid: int) -> dict[int, str]:
    """pid -> command line of the live processes whose parent is ``pid``."""
    out = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            out[int(d.name)] = cmd
    return out


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"   # a zombie has died; only its parent's wait is due


class RunPaper:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        # the harness's configuration (free ports, an instance of its own, key files in tmp, where
        # run-paper's --run-dir puts them too); run-paper starts the processes
        st = Stack(tmp, name="rpp")
        self.cfg, self.instance = st.config, st.instance
        self.out, self.err = tmp / "run-paper.out", tmp / "run-paper.err"
        self.p = subprocess.Popen([PY, "-m", "bot4d.cli", "run-paper", "--config", str(self.cfg), "--run-dir",
                                   str(tmp), "--no-persist"], stdout=open(self.out, "wb"), stderr=open(self.err, "wb"))

    def kids(self) -> dict[int, str]:
        """Wait for the venue and the daemon to be started; their pids by role."""
        def both():
            k = _children(self.p.pid)
            sim = [p for p, c in k.items() if "bot4d.cli sim" in c]
            run = [p for p, c in k.items() if "bot4d.cli run " in c]
            return {"sim": sim[0], "bot4d": run[0]} if sim and run else None
        return wait_for(both, 60, "run-paper to start the venue and the daemon", [self.p])

    def close(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait(10)
        for f in Path("/dev/shm").glob(f"bot4d.{self.instance}.*"):
            f.unlink(missing_ok=True)


def test_children_die_with_a_killed_run_paper(tmp_path):
    rp = RunPaper(tmp_path)
    try:
        kids = rp.kids()
        assert all(_alive(p) for p in kids.values())
        rp.p.send_signal(signal.SIGKILL)
        rp.p.wait(10)
        wait_for(lambda: not any(_alive(p) for p in kids.values()), 15, "the children to die with run-paper")
    finally:
        rp.close()


def test_a_child_that_exits_early_stops_run_paper_loudly(tmp_path):
    rp = RunPaper(tmp_path)
    try:
        kids = rp.kids()
        wait_for(lambda: "is paper trading" in rp.out.read_text(), 300, "the daemon to be ready", [rp.p])
        os.kill(kids["sim"], signal.SIGKILL)
        rc = rp.p.wait(60)
        err = rp.err.read_text()
        assert rc == 1, (rc, err)
        assert f"bot4d run-paper: sim (pid {kids['sim']}) was killed by SIGKILL; see {tmp_path}/sim.log: " \
               "stopping everything" in err, err
        assert not _alive(kids["bot4d"]), "run-paper left the daemon running"
        assert "bot4d stopped" in rp.out.read_text()
    finally:
        rp.close()
