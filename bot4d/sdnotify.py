"""The sd_notify protocol: READY=1, WATCHDOG=1, STATUS=..., STOPPING=1 to $NOTIFY_SOCKET.

A datagram to the AF_UNIX socket named by ``NOTIFY_SOCKET`` (a leading ``@`` names the abstract
namespace), as sd_notify(3) describes. Without ``NOTIFY_SOCKET`` (not under systemd) every call is a
no-op that returns False, so the daemon runs the same in a terminal.
"""
from __future__ import annotations

import os
import socket


class Notifier:
    def __init__(self, env: dict[str, str] | None = None):
        env = os.environ if env is None else env
        addr = env.get("NOTIFY_SOCKET", "")
        if addr.startswith("@"):
            addr = "\0" + addr[1:]
        self.addr = addr or None
        self._sock: socket.socket | None = None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        # the watchdog applies to us only when systemd asked for it and named our pid (or no pid)
        self.watchdog_usec = int(usec) if usec.isdigit() and (not pid or pid == str(os.getpid())) else 0

    @property
    def enabled(self) -> bool:
        return self.addr is not None

    def notify(self, *fields: str) -> bool:
        """Send ``KEY=value`` lines in one datagram; False when not under systemd."""
        if self.addr is None:
            return False
        for f in fields:
            if "=" not in f or "\n" in f:
                raise ValueError(f"sd_notify field must be one KEY=value line: {f!r}")
        if self._sock is None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._sock.sendto("\n".join(fields).encode(), self.addr)
        return True

    def ready(self, status: str = "") -> bool:
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    def reloading(self) -> bool:
        return self.notify("RELOADING=1")

    def watchdog_interval_s(self) -> float:
        """How often to ping: half the watchdog timeout, as sd_watchdog_enabled(3) advises."""
        return self.watchdog_usec / 2e6 if self.watchdog_usec else 0.0

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
