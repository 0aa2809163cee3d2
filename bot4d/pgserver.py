"""A local PostgreSQL server for tests and ``make run``: initdb + pg_ctl, Unix socket only.

The server listens on no TCP port (``listen_addresses=''``); clients reach it through the socket
directory, so parallel test sessions on one machine never collide on a port. ``initdb`` and
``pg_ctl`` refuse to run as root, so when the caller is root every server command runs as the
``postgres`` user through ``runuser`` and the data/socket directories are chowned to it.

Usage::

    srv = PgServer(base_dir)        # base_dir/data, base_dir/sock
    srv.start()                     # initdb on first use, then pg_ctl start -w
    conninfo = srv.conninfo("postgres")
    srv.create_database("t1")
    srv.stop()                      # pg_ctl stop -m fast (or "immediate" for crash tests)
"""
from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import subprocess
import time
from pathlib import Path

import psycopg


class PgServerError(RuntimeError):
    """The local PostgreSQL server could not be found, initialised, started or stopped."""


def find_bindir() -> Path:
    """Newest /usr/lib/postgresql/<major>/bin holding initdb (override: $BOT4D_PG_BINDIR)."""
    env = os.environ.get("BOT4D_PG_BINDIR")
    if env:
        p = Path(env)
        if not (p / "initdb").exists():
            raise PgServerError(f"BOT4D_PG_BINDIR={env} has no initdb")
        return p
    found = []
    for d in glob.glob("/usr/lib/postgresql/*/bin"):
        m = re.search(r"/postgresql/(\d+)/bin$", d)
        if m and os.path.exists(os.path.join(d, "initdb")):
            found.append((int(m.group(1)), Path(d)))
    if not found:
        raise PgServerError(
            "no PostgreSQL server binaries in /usr/lib/postgresql/*/bin: "
            "install them (apt-get install postgresql) or set BOT4D_PG_BINDIR"
        )
    return max(found)[1]


class PgServer:
    """One PostgreSQL cluster in ``base_dir`` (data in ``data/``, socket in ``sock/``)."""

    def __init__(self, base_dir: str | os.PathLike[str], *, bindir: Path | None = None,
                 extra_conf: dict[str, str] | None = None, durable: bool = False) -> None:
        """``durable=False`` (tests, benchmarks) turns fsync off: a crash of the *machine* may
        lose commits, a crash of PostgreSQL does not. ``make run`` uses ``durable=True``."""
        self.base = Path(base_dir).resolve()
        self.data = self.base / "data"
        self.sock = self.base / "sock"
        self.log = self.base / "server.log"
        self.bindir = bindir or find_bindir()
        self.extra_conf = extra_conf or {}
        self.durable = durable
        self._as_root = os.geteuid() == 0
        self.user = "postgres" if self._as_root else pwd.getpwuid(os.geteuid()).pw_name

    # --- running server commands as the right user ------------------------------------------
    def _run(self, args: list[str], *, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self._as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if check and p.returncode != 0:
            tail = ""
            if self.log.exists():
                tail = "\n--- server log tail ---\n" + "\n".join(self.log.read_text(errors="replace").splitlines()[-20:])
            raise PgServerError(f"{' '.join(args[:2])} failed ({p.returncode}): {p.stderr.strip() or p.stdout.strip()}{tail}")
        return p

    def _own(self, path: Path) -> None:
        if self._as_root:
            pw = pwd.getpwnam("postgres")
            os.chown(path, pw.pw_uid, pw.pw_gid)

    # --- lifecycle ----------------------------------------------------------------------------
    def init(self) -> None:
        if (self.data / "PG_VERSION").exists():
            return
        self.base.mkdir(parents=True, exist_ok=True)
        # runuser -u postgres must be able to traverse to base_dir (e.g. under a 0700 tmp dir).
        for d in (self.base, self.sock):
            d.mkdir(parents=True, exist_ok=True)
            self._own(d)
        os.chmod(self.base, 0o755)
        self._run(["initdb", "-D", str(self.data), "-U", self.user, "-A", "trust",
                   "-E", "UTF8", "--locale=C", "--no-sync"])
        conf = {
            "listen_addresses": "''",
            "unix_socket_directories": f"'{self.sock}'",
            "fsync": "on" if self.durable else "off",
            "synchronous_commit": "on",
            "full_page_writes": "on" if self.durable else "off",
            "max_connections": "50",
            "shared_buffers": "128MB",
            "max_wal_size": "1GB",
            "log_min_messages": "warning",
        }
        conf.update(self.extra_conf)
        with open(self.data / "postgresql.auto.conf", "a") as f:
            for k, v in conf.items():
                f.write(f"{k} = {v}\n")

    def start(self, timeout: float = 60) -> None:
        self.init()
        if self.running():
            return
        if not self.log.exists():
            self.log.touch()
        self._own(self.log)
        self._run(["pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", str(int(timeout)), "start"],
                  timeout=timeout + 10)
        # pg_ctl -w returns when the server accepts connections; double-check through the socket.
        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.conninfo("postgres"), connect_timeout=5):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self, mode: str = "fast") -> None:
        """Stop the server; ``mode`` is pg_ctl's: smart, fast, or immediate (a crash)."""
        if not self.running():
            return
        self._run(["pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop"])

    def running(self) -> bool:
        if not (self.data / "PG_VERSION").exists():
            return False
        return self._run(["pg_ctl", "-D", str(self.data), "status"], check=False).returncode == 0

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)

    # --- clients ------------------------------------------------------------------------------
    def conninfo(self, dbname: str = "postgres") -> str:
        return f"host={self.sock} dbname={dbname} user={self.user}"

    def create_database(self, name: str, template: str | None = None) -> str:
        """Create a fresh database (dropping one of that name) and return its conninfo.

        ``template`` copies an existing database (no one may be connected to it), which is
        how tests get an already migrated schema in milliseconds instead of re-running DDL.
        """
        for n in (name, template):
            if n is not None and not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", n):
                raise PgServerError(f"database name {n!r} must be a lowercase identifier")
        with psycopg.connect(self.conninfo("postgres"), autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            c.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
        return self.conninfo(name)

    def drop_database(self, name: str) -> None:
        with psycopg.connect(self.conninfo("postgres"), autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main(argv: list[str] | None = None) -> int:
    """``python -m bot4d.pgserver start|stop|status|dsn --dir DIR``: a local server for ``make run``."""
    import argparse
    import sys

    ap = argparse.ArgumentParser(prog="python -m bot4d.pgserver", description=main.__doc__)
    ap.add_argument("action", choices=["start", "stop", "status", "dsn"])
    ap.add_argument("--dir", required=True, help="state directory (data/ and sock/ go inside)")
    ap.add_argument("--db", default="bot4d", help="database to create on start and to name in dsn")
    args = ap.parse_args(argv)
    srv = PgServer(args.dir, durable=True)
    try:
        if args.action == "start":
            srv.start()
            with psycopg.connect(srv.conninfo("postgres"), autocommit=True) as c:
                if not c.execute("SELECT 1 FROM pg_database WHERE datname = %s", (args.db,)).fetchone():
                    c.execute(f'CREATE DATABASE "{args.db}"')
            print(srv.conninfo(args.db))
        elif args.action == "stop":
            srv.stop()
        elif args.action == "status":
            print("running" if srv.running() else "stopped")
            return 0 if srv.running() else 3
        else:
            print(srv.conninfo(args.db))
    except PgServerError as e:
        print(f"pgserver: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
