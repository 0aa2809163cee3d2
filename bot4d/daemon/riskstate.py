"""The risk state that must survive a restart, in ``daemon.state_dir``: load, save, validate.

A shard's kill switch and its account words live in the process's memory; a restart (systemd's
``Restart=on-failure``, a SIGKILL, a reboot) would rebuild them from nothing and so clear a
drawdown trip. The io thread therefore saves, per shard, the kill switch's words (trading state,
whether and why it is tripped, the recovery plan, trip time and measured value, the cool-off's
end, trip and change counts), the peak equity, the trading day's start equity and that day's
number, and restores them at start (``bot4d.daemon.app``).

Two files per instance:

* ``risk-<instance>.json``: the state. JSON a person can read, with a SHA-256 of its canonical
  body; trading states, trip reasons and plans are stored by name, so a renumbering between
  versions cannot turn one reason into another. Money is int64 in quote units of 10**-8.
* ``risk-<instance>.initialised``: written once, before the first state. It says that this
  ``state_dir`` has held a state, so a state file missing later is a *lost* file (the daemon
  starts REDUCING), not a first start.

Writes are atomic: a temporary file in the same directory, fsync, rename over the old file,
fsync of the directory. A reader sees the old state or the new one, never half of either.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bot4d.kernels import killswitch as ksk
from bot4d.kernels import risk as rk

FORMAT = "bot4d-risk-state"
VERSION = 1
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1

_STATES = {name: v for v, name in ksk.STATE_NAMES.items()}
_REASONS = {"NONE": ksk.TRIP_NONE} | {name[len("TRIP_"):]: v for v, name in ksk.TRIP_NAMES.items()
                                       if name.startswith("TRIP_") and v != ksk.TRIP_NONE}
_PLANS = {k[len("PLAN_"):]: v for k, v in vars(ksk).items() if k.startswith("PLAN_") and isinstance(v, int)}
_SEVERITY = {ksk.TS_ACTIVE: 0, ksk.TS_REDUCING: 1, ksk.TS_HALTED: 2}

# what a shard's record holds: (field, kill-switch word or None)
_KS_WORDS = (("trip_ns", ksk.K_TRIP_TS), ("detail", ksk.K_DETAIL), ("trip_count", ksk.K_TRIP_COUNT),
             ("resume_at_ns", ksk.K_RESUME_AT), ("changes", ksk.K_CHANGES))


class RiskStateError(Exception):
    """The saved state cannot be used; ``str(e)`` says why."""


@dataclass(frozen=True)
class ShardRisk:
    shard: int
    trading_state: int      # killswitch.TS_*
    tripped: bool
    reason: int             # killswitch.TRIP_*
    plan: int               # killswitch.PLAN_*
    trip_ns: int
    detail: int
    resume_at_ns: int
    trip_count: int
    changes: int
    peak_equity: int        # quote units (10**-8)
    day_start_equity: int
    day: int                # trading-day number (ns - day offset) // 86400e9; -1: none yet

    def describe(self) -> str:
        s = ksk.STATE_NAMES[self.trading_state]
        if self.tripped:
            s += f" (tripped: {ksk.TRIP_NAMES.get(self.reason, self.reason)[len('TRIP_'):]}, plan " \
                 f"{_name(_PLANS, self.plan)}, {self.trip_count} trip(s))"
        return s


@dataclass(frozen=True)
class RiskSnapshot:
    instance: str
    saved_ns: int
    boot: str
    day_offset_ns: int
    shards: tuple[ShardRisk, ...]

    def most_severe(self) -> ShardRisk:
        return max(self.shards, key=lambda r: (_SEVERITY[r.trading_state], r.tripped))


@dataclass(frozen=True)
class Loaded:
    """What :func:`load` found. ``kind``: "restored" (``snapshot`` set), "first start" (neither
    file exists), "missing" (the state was lost: the directory was initialised) or "corrupt"."""
    kind: str
    message: str
    snapshot: RiskSnapshot | None = None


def paths(state_dir: Path, instance: str) -> tuple[Path, Path]:
    """(state file, initialised marker) of ``instance`` in ``state_dir``."""
    return state_dir / f"risk-{instance}.json", state_dir / f"risk-{instance}.initialised"


# --- arrays <-> records (run on the shard's thread: it is the arrays' only writer) --------------
def capture(shard: int, ks: np.ndarray, acct: np.ndarray) -> ShardRisk:
    """The saved part of one shard's kill switch ``ks`` and risk account words ``acct``."""
    return ShardRisk(shard=shard, trading_state=int(ks[ksk.K_STATE]), tripped=bool(ks[ksk.K_TRIPPED]),
                     reason=int(ks[ksk.K_REASON]), plan=int(ks[ksk.K_PLAN]),
                     **{f: int(ks[w]) for f, w in _KS_WORDS},
                     peak_equity=int(acct[rk.A_PEAK_EQUITY]), day_start_equity=int(acct[rk.A_DAY_START_EQUITY]),
                     day=int(acct[rk.A_DAY]))


def restore(rec: ShardRisk, ks: np.ndarray, acct: np.ndarray, *, equity: bool, day: bool) -> None:
    """Write ``rec`` into a shard's arrays: the kill switch always, the peak if ``equity``, the
    day's start equity and its day if ``day`` (it belongs to the day boundary it was taken with)."""
    ks[ksk.K_STATE] = rec.trading_state
    ks[ksk.K_TRIPPED] = 1 if rec.tripped else 0
    ks[ksk.K_REASON] = rec.reason
    ks[ksk.K_PLAN] = rec.plan
    for f, w in _KS_WORDS:
        ks[w] = getattr(rec, f)
    if equity:
        acct[rk.A_PEAK_EQUITY] = rec.peak_equity
    if day:
        acct[rk.A_DAY_START_EQUITY] = rec.day_start_equity
        acct[rk.A_DAY] = rec.day


def restore_account(snap: RiskSnapshot, acct: np.ndarray, *, day: bool) -> None:
    """The account's peak and, if ``day``, the trading day's start equity into a shard's ``acct``,
    whatever shards saved them: each shard saved its record of the same account figures
    (bot4d.daemon.account), so the highest peak, and of the latest day the highest start, is what
    the strictest of them measured against."""
    acct[rk.A_PEAK_EQUITY] = max(r.peak_equity for r in snap.shards)
    if day:
        d = max(r.day for r in snap.shards)
        acct[rk.A_DAY_START_EQUITY] = max(r.day_start_equity for r in snap.shards if r.day == d)
        acct[rk.A_DAY] = d


# --- bytes ----------------------------------------------------------------------------------------
def _canonical(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def _name(table: dict[str, int], v: int) -> str:
    for k, x in table.items():
        if x == v:
            return k
    raise RiskStateError(f"value {v} has no name in {sorted(table)}")


def encode(snap: RiskSnapshot) -> bytes:
    shards = []
    for r in snap.shards:
        d = asdict(r)
        d["trading_state"] = ksk.STATE_NAMES[r.trading_state]
        d["reason"] = _name(_REASONS, r.reason)
        d["plan"] = _name(_PLANS, r.plan)
        shards.append(d)
    body = {"format": FORMAT, "version": VERSION, "instance": snap.instance, "saved_ns": snap.saved_ns,
            "boot": snap.boot, "quote_scale": rk.QUOTE_SCALE, "day_offset_ns": snap.day_offset_ns,
            "shards": shards}
    body["sha256"] = hashlib.sha256(_canonical(body)).hexdigest()
    return (json.dumps(body, indent=1, sort_keys=True) + "\n").encode()


def _int(d: dict[str, Any], k: str, lo: int = INT64_MIN, hi: int = INT64_MAX) -> int:
    v = d.get(k)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise RiskStateError(f"{k} = {v!r} is not an integer within {lo}..{hi}")
    return v


def _named(d: dict[str, Any], k: str, table: dict[str, int]) -> int:
    v = d.get(k)
    if not isinstance(v, str) or v not in table:
        raise RiskStateError(f"{k} = {v!r} is not one of {', '.join(sorted(table))}")
    return table[v]


def decode(data: bytes, instance: str) -> RiskSnapshot:
    """Parse and validate a saved state of ``instance``; :class:`RiskStateError` says what is wrong."""
    try:
        body = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise RiskStateError(f"not JSON ({e})") from None
    if not isinstance(body, dict):
        raise RiskStateError("not a JSON object")
    digest = body.pop("sha256", None)
    if digest != hashlib.sha256(_canonical(body)).hexdigest():
        raise RiskStateError("checksum mismatch (the file was changed or is damaged)")
    if body.get("format") != FORMAT or body.get("version") != VERSION:
        raise RiskStateError(f"format {body.get('format')!r} version {body.get('version')!r}, "
                             f"this build reads {FORMAT!r} version {VERSION}")
    if body.get("instance") != instance:
        raise RiskStateError(f"saved by instance {body.get('instance')!r}, this is {instance!r}")
    if body.get("quote_scale") != rk.QUOTE_SCALE:
        raise RiskStateError(f"quote_scale {body.get('quote_scale')!r}, this build uses {rk.QUOTE_SCALE}")
    raw = body.get("shards")
    if not isinstance(raw, list) or not raw:
        raise RiskStateError("no shards")
    shards = [_shard(d) for d in raw]
    if len({r.shard for r in shards}) != len(shards):
        raise RiskStateError("a shard is listed twice")
    return RiskSnapshot(instance=instance, saved_ns=_int(body, "saved_ns", 0), boot=str(body.get("boot", "")),
                        day_offset_ns=_int(body, "day_offset_ns", 0, 86_400 * 10**9 - 1),
                        shards=tuple(sorted(shards, key=lambda r: r.shard)))


def _shard(d: object) -> ShardRisk:
    if not isinstance(d, dict):
        raise RiskStateError("a shard record is not an object")
    if not isinstance(d.get("tripped"), bool):
        raise RiskStateError(f"tripped = {d.get('tripped')!r} is not true or false")
    return ShardRisk(
        shard=_int(d, "shard", 0, 1023), trading_state=_named(d, "trading_state", _STATES),
        tripped=d["tripped"], reason=_named(d, "reason", _REASONS), plan=_named(d, "plan", _PLANS),
        trip_ns=_int(d, "trip_ns"), detail=_int(d, "detail"), resume_at_ns=_int(d, "resume_at_ns"),
        trip_count=_int(d, "trip_count", 0), changes=_int(d, "changes", 0),
        peak_equity=_int(d, "peak_equity"), day_start_equity=_int(d, "day_start_equity"),
        day=_int(d, "day", -1))


# --- files ----------------------------------------------------------------------------------------
def _fsync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def save(state_dir: Path, snap: RiskSnapshot) -> Path:
    """Write ``snap`` atomically (creating ``state_dir`` and, the first time, the marker). OSError
    propagates: the caller decides what an unsaved state means."""
    state_dir.mkdir(mode=0o750, parents=True, exist_ok=True)
    path, marker = paths(state_dir, snap.instance)
    if not marker.exists():
        _write_atomic(marker, f"state_dir initialised for instance {snap.instance} at {snap.saved_ns} ns "
                              f"(boot {snap.boot}); {path.name} must exist from now on\n".encode())
    _write_atomic(path, encode(snap))
    return path


def load(state_dir: Path, instance: str) -> Loaded:
    """Read the saved state. A corrupt file is moved aside (``.corrupt-<ns>``) for inspection."""
    path, marker = paths(state_dir, instance)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        if marker.exists():
            return Loaded("missing", f"{path} is missing although {state_dir} was initialised "
                                     f"({marker.name} exists): the saved risk state was lost")
        return Loaded("first start", f"no saved risk state in {state_dir} and it was never initialised: "
                                     "first start of this instance")
    except OSError as e:
        return Loaded("corrupt", f"{path} cannot be read: {e.strerror}")
    try:
        snap = decode(data, instance)
    except RiskStateError as e:
        aside = path.with_name(f"{path.name}.corrupt-{time.time_ns()}")
        try:
            os.replace(path, aside)
            where = f"moved to {aside}"
        except OSError as e2:
            where = f"could not be moved aside: {e2.strerror}"
        return Loaded("corrupt", f"{path} is corrupt: {e} ({where})")
    return Loaded("restored", f"risk state restored from {path} (saved at {snap.saved_ns} ns by boot "
                              f"{snap.boot or '?'})", snap)
