"""The last venue trade id the journal holds, per symbol, kept in ``daemon.state_dir``.

Fills the venue executed while the daemon was down, or in the moments around a crash, are
recovered at start by asking the venue for every trade after the last one the journal holds
(``BinanceGateway.set_fill_marks`` and its sweep: Binance ``myTrades`` from ``fromId``). That is
exact only if the mark is exactly the last journalled trade of the symbol, and this is how it is:

* the gateway hands a shard the fills of a symbol in increasing trade id (stream events that
  follow a gap wait until the gap is recovered), and the shard journals them in that order; so
  every trade of ours up to a symbol's last EV_FILL is in the journal (or was refused by the
  OMS, which the journal records as well) and none after it is;
* while running, :class:`MarkTracker` reads what the shards published into their journal rings
  (a non-gating reader on the io thread, every ``POLL_S``) and writes the marks together with the
  ring position they cover to ``fill-marks-<instance>.json`` (atomically, in an executor);
* at the next start :func:`load` reads that file and, before the new rings replace the old
  ones, the records the old ring holds after that position (the last moments before a crash).

When that cannot be proven — the old ring lost records after the saved position (more than a
ring's capacity in ``POLL_S``), the file's ring is gone, or a ring the file does not name holds
records — :func:`load` says so in ``FillMarks.problems``: the daemon logs it, shows it in
``status``, and recovers from the marks it has (a lower mark can journal a fill twice, never lose
one). Without any file (a first start) there is no mark: the gateway starts from the venue's
latest trade and says that earlier fills are not recovered.
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bot4d.daemon.riskstate import _write_atomic  # the state_dir's atomic write (tmp, fsync, rename)
from bot4d.records import EV_FILL, JOURNAL_EVENT_DTYPE
from ipc.ring import JournalReader, Ring, kept_name
from ipc.segment import SegmentError

log = logging.getLogger("bot4d.fillmarks")

FORMAT = "bot4d-fill-marks"
VERSION = 1
POLL_S = 0.2
READ_CHUNK = 1 << 14


def path_of(state_dir: Path, instance: str) -> Path:
    return Path(state_dir) / f"fill-marks-{instance}.json"


def journal_name(shard: int) -> str:
    return f"journal-{shard}"


def fill_maxima(ev: np.ndarray, names: dict[int, str]) -> dict[str, int]:
    """The largest venue trade id (aux1) of the EV_FILL records per instrument name."""
    f = ev[(ev["kind"] == EV_FILL) & (ev["aux1"] > 0)]
    out: dict[str, int] = {}
    for inst in np.unique(f["instrument"]).tolist():
        name = names.get(int(inst))
        if name is None:
            continue  # an instrument the run that wrote the ring did not name: not ours to mark
        out[name] = int(f["aux1"][f["instrument"] == inst].max())
    return out


def merge(marks: dict[str, int], more: dict[str, int]) -> bool:
    """Raise ``marks`` to ``more``; True if any mark moved."""
    moved = False
    for k, v in more.items():
        if v > marks.get(k, 0):
            marks[k] = v
            moved = True
    return moved


@dataclass
class FillMarks:
    """What :func:`load` found: the marks (``venue:SYMBOL`` -> last journalled trade id), where
    they came from, and what could not be proven (empty when exact)."""
    path: Path
    marks: dict[str, int] = field(default_factory=dict)
    found_file: bool = False
    tail_records: int = 0          # old-ring records read after the saved positions
    problems: list[str] = field(default_factory=list)

    def for_venue(self, venue: str) -> dict[str, int]:
        """The marks of one venue's symbols, by symbol."""
        pre = f"{venue}:"
        return {k[len(pre):]: v for k, v in self.marks.items() if k.startswith(pre)}

    def describe(self) -> dict[str, Any]:
        return {"file": str(self.path), "found_file": self.found_file, "marks": dict(self.marks),
                "tail_records": self.tail_records, "problems": list(self.problems)}


def _read_file(p: Path) -> dict[str, Any] | None:
    try:
        d = json.loads(p.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise ValueError(f"{p}: cannot be read: {e}") from None
    if not isinstance(d, dict) or d.get("format") != FORMAT or d.get("version") != VERSION \
            or not isinstance(d.get("marks"), dict) or not isinstance(d.get("journals"), dict):
        raise ValueError(f"{p}: not a {FORMAT} file of version {VERSION}")
    for k, v in d["marks"].items():
        if not isinstance(k, str) or isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"{p}: mark {k!r}: {v!r} is not a trade id")
    return d


def _attach(instance: str, name: str) -> Ring | None:
    try:
        return Ring.attach(instance, name, readonly=True, dtype=JOURNAL_EVENT_DTYPE)
    except SegmentError:
        return None


def _read_from(ring: Ring, seq: int) -> tuple[np.ndarray, bool]:
    """Every record of ``ring`` from ``seq`` to its cursor, and whether they were all still there."""
    rd = JournalReader(ring, seq)
    parts = []
    while True:
        ev = rd.read(READ_CHUNK)
        if rd.laps:
            return np.zeros(0, JOURNAL_EVENT_DTYPE), False
        if len(ev) == 0:
            break
        parts.append(ev)
    return (np.concatenate(parts) if parts else np.zeros(0, JOURNAL_EVENT_DTYPE)), True


def write(path: Path, data: bytes) -> str | None:
    """Write the marks file atomically (blocking: an executor's job); None, or why not."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_atomic(path, data)
    except OSError as e:
        return f"{e.filename or path}: {e.strerror or e}"
    return None


def load(state_dir: Path, instance: str, shards: int) -> FillMarks:
    """The marks at start: the saved file plus the old rings' records after its positions. Call
    before this run creates its journal rings (they replace the old ones)."""
    fm = FillMarks(path_of(state_dir, instance))
    try:
        d = _read_file(fm.path)
    except ValueError as e:
        fm.problems.append(str(e))
        d = None
    saved: dict[str, Any] = {}
    if d is not None:
        fm.found_file = True
        fm.marks = {k: int(v) for k, v in d["marks"].items()}
        saved = d["journals"]
    for s in sorted({*range(shards), *(int(k) for k in saved)}):
        name = journal_name(s)
        j = saved.get(str(s))
        ring = _attach(instance, name)
        try:
            if j is None:
                if ring is not None and ring.cursor > 0 and d is not None:
                    fm.problems.append(f"journal ring {name} (id {ring.journal_id}) holds {ring.cursor} records "
                                       f"the marks file does not cover")
                continue
            jid, seq = int(j["journal_id"]), int(j["seq"])
            names = {int(k): str(v) for k, v in j["instruments"].items()}
            if ring is None or ring.journal_id != jid:
                other = ring
                ring = _attach(instance, kept_name(name, jid))  # kept aside by a restart since
                if other is not None and other.journal_id > jid and other.cursor > 0:
                    fm.problems.append(f"journal ring {name} (id {other.journal_id}) holds {other.cursor} "
                                       f"records newer than the marks file knows")
                if other is not None:
                    other.close()
            if ring is None:
                fm.problems.append(f"journal ring {name} id {jid} is gone: fills it journalled after "
                                   f"position {seq} are not known")
                continue
            ev, whole = _read_from(ring, seq)
            if not whole:
                fm.problems.append(f"journal ring {name} id {jid} no longer holds its records from position "
                                   f"{seq} (cursor {ring.cursor}, capacity {ring.capacity})")
                continue
            fm.tail_records += len(ev)
            merge(fm.marks, fill_maxima(ev, names))
        finally:
            if ring is not None:
                ring.close()
    return fm


class MarkTracker:
    """Follows this run's journal rings and keeps the marks file up to date (io thread)."""

    def __init__(self, state_dir: Path, instance: str, boot: str, marks: dict[str, int]) -> None:
        self.path = path_of(state_dir, instance)
        self.instance = instance
        self.boot = boot
        self.marks = dict(marks)
        self.journals: dict[int, tuple[Ring, JournalReader, dict[int, str]]] = {}
        self.saved_pos: dict[int, int] = {}
        self.laps = 0
        self.saves = 0
        self.save_error: str | None = None
        self._dirty = True

    def follow(self, shard: int, ring: Ring, names: dict[int, str]) -> None:
        """Track ``ring`` (shard ``shard``'s journal, from its record 0); ``names``: instrument id
        -> ``venue:SYMBOL`` of this run."""
        self.journals[shard] = (ring, JournalReader(ring, 0), dict(names))
        self.saved_pos[shard] = -1
        self._dirty = True

    def document(self) -> bytes:
        js = {str(s): {"journal_id": ring.journal_id, "seq": rd.next_seq,
                       "instruments": {str(k): v for k, v in names.items()}}
              for s, (ring, rd, names) in self.journals.items()}
        d = {"format": FORMAT, "version": VERSION, "instance": self.instance, "boot": self.boot,
             "saved_ns": time.time_ns(), "marks": dict(sorted(self.marks.items())), "journals": js}
        return (json.dumps(d, indent=1) + "\n").encode()

    def poll(self) -> bool:
        """Read what the shards published since the last poll; True when the file should be
        written (a mark moved, a new ring, or the saved position fell a quarter ring behind)."""
        for s, (ring, rd, names) in self.journals.items():
            laps = rd.laps
            while True:
                ev = rd.read(READ_CHUNK)
                if len(ev) == 0:
                    break
                if merge(self.marks, fill_maxima(ev, names)):
                    self._dirty = True
            if rd.laps != laps:
                # records went by unread: a mark may be behind; the next start sees the gap too
                self.laps += rd.laps - laps
                log.error("fill marks: lapped on journal %d (%d records unread): a restart may journal "
                          "a recovered fill twice", s, rd.missed)
                self._dirty = True
            if rd.next_seq - self.saved_pos[s] > ring.capacity // 4:
                self._dirty = True
        return self._dirty

    def take(self) -> tuple[bytes, dict[int, int]] | None:
        """The file's contents to write now and the positions they cover, or None when nothing
        changed (io thread; the write itself goes to an executor: :func:`write`)."""
        if not self._dirty:
            return None
        self._dirty = False
        return self.document(), {s: rd.next_seq for s, (_r, rd, _n) in self.journals.items()}

    def written(self, pos: dict[int, int], err: str | None) -> None:
        """The outcome of writing what :meth:`take` gave (io thread)."""
        if err is not None:
            self._dirty = True
            if err != self.save_error:
                log.error("fill marks NOT saved (%s): a restart could not recover fills exactly", err)
            self.save_error = err
            return
        self.saved_pos.update(pos)
        self.saves += 1
        self.save_error = None

    def status(self) -> dict[str, Any]:
        return {"file": str(self.path), "marks": dict(self.marks), "saves": self.saves, "laps": self.laps,
                "save_error": self.save_error,
                "position": {str(s): rd.next_seq for s, (_r, rd, _n) in self.journals.items()}}
