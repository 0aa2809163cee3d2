"""Read a daemon's catalog and the segments it lists, read-only, into plain samples.

A ``Sample`` is (metric, type, labels, value, help). Fixed-point values are divided by their scale
here: Prometheus values are floats by definition, and nothing read by a monitor ever flows back
to a venue or the database. Imports ``ipc`` only.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ipc.counters import Counters, counter_get
from ipc.histogram import H_SUM, N_BUCKETS, bucket_bounds
from ipc.ring import Ring
from ipc.segment import Segment, SegmentError
from ipc.seqlock import SnapshotArea

CATALOG = "catalog"
KNOWN_CATALOG_VERSIONS = (1,)


@dataclass(frozen=True)
class Sample:
    metric: str
    type: str            # counter | gauge
    labels: dict[str, str]
    value: float
    help: str


@dataclass(frozen=True)
class Histogram:
    metric: str
    labels: dict[str, str]
    help: str
    upper_bounds_s: list[float]   # cumulative buckets' upper bounds, seconds
    cumulative: list[int]
    count: int
    sum_s: float


class NoCatalog(SegmentError):
    """No complete catalog for this instance (yet): no daemon has published one."""


class CatalogError(SegmentError):
    """A catalog exists but does not describe what the reader needs: a broken contract."""


@dataclass(frozen=True)
class CatalogInstrument:
    """One instrument the daemon trades, as its catalog describes it."""
    id: int              # the daemon's instrument id (row index of the snapshots)
    venue: str
    symbol: str
    price_scale: int     # decimal places of a price unit
    qty_scale: int       # decimal places of a quantity unit


def open_catalog(instance: str) -> tuple[Segment, dict[str, Any]]:
    """Attach ``instance``'s catalog read-only and parse it: (segment, catalog JSON).

    Raises NoCatalog when there is none (or its creator is still writing it), SegmentError for a
    layout this reader does not know or an unreadable payload. The caller closes the segment.
    """
    try:
        seg = Segment.attach(instance, CATALOG, readonly=True, kind="catalog")
    except SegmentError as e:
        if "no such segment" in str(e) or "never completely initialised" in str(e):
            raise NoCatalog(str(e)) from None
        raise
    head = seg.meta
    if head.get("version") not in KNOWN_CATALOG_VERSIONS:
        seg.close()
        raise SegmentError(f"catalog layout version {head.get('version')!r} is not one this monitor "
                           f"knows ({KNOWN_CATALOG_VERSIONS})")
    try:
        blob = bytes(seg.array(0, np.uint8, int(head["bytes"])))
        meta = json.loads(blob)
    except (KeyError, ValueError, TypeError, SegmentError) as e:
        path = seg.path
        seg.close()
        raise SegmentError(f"{path}: unreadable catalog: {e}") from None
    return seg, meta


def read_catalog(instance: str) -> dict[str, Any]:
    """The catalog JSON of ``instance``, read once (the segment is not kept mapped)."""
    seg, meta = open_catalog(instance)
    seg.close()
    return meta


def _snapshot_scales(meta: dict[str, Any], segment: str, field: str) -> tuple[list[Any], list[Any]]:
    for snap in meta.get("snapshots", []):
        if isinstance(snap, dict) and snap.get("segment") == segment:
            rows = snap.get("rows")
            for f in snap.get("fields", []):
                if isinstance(f, dict) and f.get("field") == field:
                    scale = f.get("scale")
                    if not isinstance(rows, list) or not isinstance(scale, list):
                        break
                    return rows, scale
            raise CatalogError(f"catalog: snapshot {segment!r} has no rows with a {field!r} scale list")
    raise CatalogError(f"catalog: no snapshot {segment!r}")


def _scale(v: Any, what: str) -> int:
    # bool is an int to Python; a scale of True would be a bug upstream, not a 1
    if type(v) is not int or not 0 <= v <= 18:
        raise CatalogError(f"catalog: {what} is {v!r}, expected an integer 0..18")
    return v


def catalog_instruments(meta: dict[str, Any]) -> list[CatalogInstrument]:
    """The instruments a catalog describes, in instrument-id order.

    Ids are row positions of the ``snap-books`` snapshot; the price scale is its ``best_bid``
    scale, the quantity scale the ``snap-positions`` ``qty`` scale. Anything missing, of the
    wrong type or inconsistent between the two snapshots raises CatalogError.
    """
    rows, pscale = _snapshot_scales(meta, "snap-books", "best_bid")
    prows, qscale = _snapshot_scales(meta, "snap-positions", "qty")
    if not (len(rows) == len(pscale) == len(prows) == len(qscale)):
        raise CatalogError(f"catalog: {len(rows)} book rows, {len(pscale)} price scales, "
                           f"{len(prows)} position rows, {len(qscale)} quantity scales: they must agree")
    out: list[CatalogInstrument] = []
    seen: dict[tuple[str, str], int] = {}
    for i, (row, prow) in enumerate(zip(rows, prows)):
        if not isinstance(row, dict) or not all(isinstance(row.get(k), str) and row.get(k)
                                                for k in ("venue", "symbol")):
            raise CatalogError(f"catalog: instrument {i}: row {row!r} lacks a venue and a symbol")
        key = (row["venue"], row["symbol"])
        if not isinstance(prow, dict) or (prow.get("venue"), prow.get("symbol")) != key:
            raise CatalogError(f"catalog: instrument {i} is {key[0]} {key[1]} in snap-books but "
                               f"{prow!r} in snap-positions")
        if key in seen:
            raise CatalogError(f"catalog: {key[0]} {key[1]} is both instrument {seen[key]} and {i}")
        seen[key] = i
        out.append(CatalogInstrument(i, key[0], key[1], _scale(pscale[i], f"instrument {i} price scale"),
                                     _scale(qscale[i], f"instrument {i} quantity scale")))
    return out


class DaemonView:
    """Every segment the catalog names, attached read-only. Reattach when the daemon restarts."""

    def __init__(self, instance: str):
        self.instance = instance
        self.catalog, self.meta = open_catalog(instance)
        self._counters: dict[str, Counters] = {}
        self._hist: dict[str, Segment] = {}
        self._snaps: dict[str, SnapshotArea] = {}
        self._rings: dict[str, Ring] = {}

    @property
    def info(self) -> dict[str, Any]:
        return dict(self.meta.get("info", {}))

    def alive(self) -> bool:
        return self.catalog.owner_alive()

    @property
    def owner_pid(self) -> int:
        return self.catalog.owner_pid

    def _counter(self, name: str) -> Counters:
        c = self._counters.get(name)
        if c is None:
            seg = Segment.attach(self.instance, name, readonly=True, kind="counters")
            if not seg.owner_alive():  # left by a process that died: its values are stale
                pid = seg.owner_pid
                seg.close()
                raise SegmentError(f"{seg.path}: owner pid {pid} is gone")
            c = self._counters[name] = Counters(seg)
        return c

    def _forget_gone(self) -> None:
        """Counters of another process (bot4d-persist's) may go, or come back as a new file,
        while the daemon runs: a segment whose owner died is dropped, its series are absent."""
        for name, c in list(self._counters.items()):
            if not c.segment.owner_alive():
                c.close()
                del self._counters[name]

    def samples(self, now_ns: int | None = None) -> list[Sample]:
        now_ns = time.time_ns() if now_ns is None else now_ns
        out: list[Sample] = []
        self._forget_gone()
        for s in self.meta.get("counters", []):
            try:
                v = int(counter_get(self._counter(s["segment"]).values, s["index"]))
            except SegmentError:
                continue  # a segment that went away is simply absent from this scrape
            out.extend(_render(s["metric"], s["type"], s["labels"], v, s["help"], s.get("enum"), now_ns,
                               s.get("scale")))
        for snap in self.meta.get("snapshots", []):
            try:
                area = self._snaps.get(snap["segment"]) or SnapshotArea.attach(self.instance, snap["segment"])
            except SegmentError:
                continue
            self._snaps[snap["segment"]] = area
            for i, row in enumerate(snap["rows"][: area.n]):
                rec = area.read(i)
                for f in snap["fields"]:
                    scale = f.get("scale")
                    out.extend(_render(f["metric"], f["type"], row, int(rec[f["field"]]), f["help"],
                                       f.get("enum"), now_ns, scale[i] if scale else None))
        for r in self.meta.get("rings", []):
            try:
                ring = self._rings.get(r["segment"]) or Ring.attach(self.instance, r["segment"], readonly=True)
            except SegmentError:
                continue
            self._rings[r["segment"]] = ring
            lag = ring_lag(ring)
            if lag is not None:
                out.append(Sample(r["metric"], "gauge", r["labels"], float(lag), r["help"]))
        return out

    def histogram_arrays(self) -> list[tuple[dict[str, Any], np.ndarray]]:
        """(catalog entry, private copy of the HDR array) for every histogram that is present."""
        out = []
        for h in self.meta.get("histograms", []):
            try:
                seg = self._hist.get(h["segment"]) or Segment.attach(self.instance, h["segment"], readonly=True)
            except SegmentError:
                continue
            self._hist[h["segment"]] = seg
            out.append((h, np.array(seg.array(0, np.int64, 8 + N_BUCKETS))))  # one copy, consistent math
        return out

    def histograms(self) -> list[Histogram]:
        return [to_prometheus_histogram(arr, h["metric"], h["labels"], h["help"])
                for h, arr in self.histogram_arrays()]

    def close(self) -> None:
        for c in self._counters.values():
            c.close()
        for s in self._hist.values():
            s.close()
        for a in self._snaps.values():
            a.close()
        for r in self._rings.values():
            r.close()
        self.catalog.close()


def ring_lag(ring: Ring) -> int | None:
    """Producer position minus the slowest active gating consumer (None: no consumer yet)."""
    from ipc.ring import C_N_GATING, C_SLOT0, CL, S_POS, S_STATE, SLOT_ACTIVE

    ctrl = ring.ctrl
    n = int(ctrl[C_N_GATING])
    positions = [int(ctrl[C_SLOT0 + CL * k + S_POS]) for k in range(n)
                 if int(ctrl[C_SLOT0 + CL * k + S_STATE]) == SLOT_ACTIVE]
    if not positions:
        return None
    return max(0, ring.cursor - min(positions))


def _render(metric: str, typ: str, labels: dict[str, str], v: int, help: str, enum: list[str] | None,
            now_ns: int, scale: int | None) -> list[Sample]:
    if typ == "enum":
        # one series per state, 1 for the current one (Prometheus' state-set convention)
        return [Sample(metric, "gauge", {**labels, "state": name}, 1.0 if k == v else 0.0, help)
                for k, name in enumerate(enum or [])]
    if typ == "age_ns":
        # a writer may stamp a moment after the reader took its clock: never a negative age
        return [Sample(metric, "gauge", labels, max(0, now_ns - v) / 1e9 if v > 0 else float("nan"), help)]
    value = float(v) / 10**scale if scale else float(v)
    return [Sample(metric, "counter" if typ == "counter" else "gauge", labels, value, help)]


# Prometheus buckets: a fixed ladder in seconds, so dashboards can aggregate across shards
PROM_BOUNDS_S = [1e-6, 2e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2,
                 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]


def to_prometheus_histogram(h: np.ndarray, metric: str, labels: dict[str, str], help: str) -> Histogram:
    """Fold the HDR buckets into the fixed ladder. An HDR bucket is counted in the first ladder
    bucket whose bound is >= the HDR bucket's upper edge, so no sample is placed below its value."""
    counts = h[8:8 + N_BUCKETS]
    _, hi = bucket_bounds(np.arange(N_BUCKETS))
    bounds_ns = np.array([b * 1e9 for b in PROM_BOUNDS_S])
    idx = np.searchsorted(bounds_ns, hi.astype(np.float64), side="left")
    per = np.bincount(idx, weights=counts.astype(np.float64), minlength=len(PROM_BOUNDS_S) + 1)
    cum = np.cumsum(per[: len(PROM_BOUNDS_S)]).astype(np.int64).tolist()
    total = int(counts.sum())
    return Histogram(metric, labels, help, PROM_BOUNDS_S, cum, total, float(h[H_SUM]) / 1e9)


