"""What the daemon shows its monitors: metric vocabulary and the shared segments that carry it.

The daemon creates, per instance, a ``catalog`` segment whose meta is a JSON description of every
series — which segment and index holds it, its Prometheus name, type, labels and help, the
decimal scale of a fixed-point value, the names of an enum's states — and the segments themselves:
counters (one writer each: the io thread, each shard), latency histograms, seqlock snapshots (books,
positions) and the journal rings. Monitors read the catalog and render what it lists, so they need
``ipc`` and nothing of ``bot4d`` (see ``bot4d.monitor``), and a new metric needs no monitor change.

Names follow Prometheus conventions: ``bot4d_`` prefix, base units (seconds), ``_total`` for
counters, and bounded labels (venue, symbol, shard, reason, component) — never an order id.
"""
from __future__ import annotations

import json
import platform
from dataclasses import dataclass, field
from typing import Any, Callable

import numba
import numpy as np

from bot4d import __version__
from ipc.counters import Counters
from ipc.histogram import LatencyHistogram
from ipc.segment import Segment
from ipc.seqlock import SnapshotArea

CATALOG = "catalog"
CATALOG_VERSION = 1

BOOK_STATES = ["SYNCING", "LIVE", "STALE", "RESYNCING"]
TRADING_STATES = ["ACTIVE", "REDUCING", "HALTED"]
BREAKER_STATES = ["CLOSED", "OPEN", "HALF_OPEN"]
# bot4d-persist on a shard's journal, as the daemon sees it (bot4d.daemon.journal_watch)
JOURNAL_CONSUMER_STATES = ["WAITING", "ATTACHED", "MISSING", "DISABLED"]

BOOK_SNAPSHOT_DTYPE = np.dtype([("state", np.int64), ("best_bid", np.int64), ("best_ask", np.int64),
                                ("bid_qty", np.int64), ("ask_qty", np.int64),
                                ("last_update_ns", np.int64), ("venue_seq", np.int64),
                                ("_pad", np.int64)], align=True)
POSITION_SNAPSHOT_DTYPE = np.dtype([("qty", np.int64), ("avg_px", np.int64), ("realised", np.int64),
                                    ("unrealised", np.int64), ("fees", np.int64),
                                    ("_pad", np.int64, 3)], align=True)
# the account risk area (bot4d.daemon.account): one row per shard, written by that shard only; money
# in risk quote units (10**-8); 128 bytes, so two shards' rows never share a cache line
ACCOUNT_ROW_DTYPE = np.dtype([("part", np.int64), ("valued", np.int64), ("gross", np.int64),
                              ("committed", np.int64), ("max_gross", np.int64), ("equity", np.int64),
                              ("peak", np.int64), ("day_start", np.int64), ("day", np.int64),
                              ("pass_ns", np.int64), ("_pad", np.int64, 6)], align=True)
ACCOUNT_SERIES = (   # ctr-io gauges the io thread writes from the account area (quote units)
    ("bot4d_account_equity", "The account's equity across every shard: quote balances + every shard's "
                             "contribution (0 until every holding has a mark)."),
    ("bot4d_account_peak_equity", "The account's peak equity (drawdown is measured from it)."),
    ("bot4d_account_day_start_equity", "The account's equity at the start of the trading day (daily loss)."),
    ("bot4d_account_gross_exposure", "Sum over every instrument of |position| x mark."),
    ("bot4d_account_committed_exposure", "Gross exposure if every live order filled on its worse side: "
                                         "what risk.max_gross_exposure bounds."),
    ("bot4d_account_gross_exposure_limit", "risk.max_gross_exposure (0: no limit)."),
)


@dataclass
class Series:
    """One counter-backed series: where it lives and how it is shown."""
    segment: str
    index: int
    metric: str
    type: str  # counter | gauge | age_ns (a timestamp shown as age in seconds) | enum
    labels: dict[str, str]
    help: str
    enum: list[str] | None = None
    scale: int | None = None   # a fixed-point value: shown divided by 10**scale

    def as_json(self) -> dict[str, Any]:
        d = {"segment": self.segment, "index": self.index, "metric": self.metric, "type": self.type,
             "labels": self.labels, "help": self.help}
        if self.enum is not None:
            d["enum"] = self.enum
        if self.scale is not None:
            d["scale"] = self.scale
        return d


@dataclass
class CounterBlock:
    """One counters segment with one writer, and the series it holds."""
    name: str
    series: list[Series] = field(default_factory=list)
    _by_key: dict[tuple[str, tuple[tuple[str, str], ...]], int] = field(default_factory=dict, repr=False)

    def add(self, metric: str, type: str, help: str, enum: list[str] | None = None, *,
            scale: int | None = None, **labels: str) -> int:
        idx = len(self.series)
        self.series.append(Series(self.name, idx, metric, type, dict(labels), help, enum, scale))
        self._by_key[(metric, tuple(sorted(labels.items())))] = idx
        return idx

    def index(self, metric: str, **labels: str) -> int:
        """Where a series sits (the io thread looks its series up on every telemetry tick)."""
        try:
            return self._by_key[(metric, tuple(sorted(labels.items())))]
        except KeyError:
            raise KeyError(f"no series {metric}{labels} in {self.name}") from None


class Telemetry:
    """The daemon's monitor-visible state. Create once at start; kernels get the raw arrays."""

    def __init__(self, instance: str, *, venues: list[str], instruments: list[tuple[str, str, int, int]],
                 shards: int, md_reasons: list[str], reject_reasons: list[str],
                 trip_reasons: list[str], components: list[str] = ("order_entry", "market_data"),
                 config_hash: str = "", reclaim_dead: bool = True, filter_labels: list[str] = (),
                 shard_series: Callable[["CounterBlock", int], None] | None = None):
        """``instruments``: (venue, symbol, price_scale, qty_scale) in instrument-id order;
        ``filter_labels``: the exchange-filter rules whose local refusals are counted;
        ``shard_series(block, shard)`` adds more series a shard's kernel writes to its block
        (the daemon's protection: ``bot4d.daemon.guards.add_series``)."""
        self.instance = instance
        self.io = CounterBlock("ctr-io")
        for v in venues:
            self.io.add("bot4d_md_messages_total", "counter", "Market-data frames received.", venue=v)
            self.io.add("bot4d_md_gaps_total", "counter", "Sequence gaps detected.", venue=v)
            self.io.add("bot4d_md_resyncs_total", "counter", "Book resynchronisations started.", venue=v)
            self.io.add("bot4d_md_reconnects_total", "counter", "WebSocket reconnects.", venue=v)
            self.io.add("bot4d_md_last_message_age_seconds", "age_ns", "Time since the last frame.", venue=v)
            for r in md_reasons:
                self.io.add("bot4d_md_rejects_total", "counter", "Market-data input refused, by reason.", venue=v, reason=r)
            for c in components:
                self.io.add("bot4d_breaker_state", "enum", "Circuit breaker state.", BREAKER_STATES, venue=v, component=c)
            # the venue's clock (bot4d.gateway.clock), in ns: shown in seconds
            self.io.add("bot4d_venue_clock_offset_seconds", "gauge", "Venue clock minus local clock, as last "
                        "measured (GET /api/v3/time); signed requests are stamped with it.", scale=9, venue=v)
            self.io.add("bot4d_venue_clock_drift", "gauge", "Change of the clock offset per second of local time "
                        "between the last two measurements (1e-6 = 1 ppm).", scale=9, venue=v)
            self.io.add("bot4d_venue_recv_window_seconds", "gauge", "recvWindow of signed requests: the venue "
                        "refuses one stamped further from its clock (-1021).", scale=9, venue=v)
        for metric, help_ in ACCOUNT_SERIES:
            self.io.add(metric, "gauge", help_, scale=8)
        for v, sym, _, _ in instruments:
            for f in filter_labels:
                self.io.add("bot4d_filter_rejects_total", "counter", "Orders refused before the wire by the "
                            "venue's exchange filters, by filter and rule.", venue=v, symbol=sym, filter=f)
        for s in range(shards):
            self.io.add("bot4d_journal_consumer_state", "enum", "bot4d-persist on the shard's journal (MISSING: "
                        "none attached for persist.sidecar_timeout_s).", JOURNAL_CONSUMER_STATES, shard=str(s))
            self.io.add("bot4d_journal_kept_events", "gauge", "Events in journals of earlier runs, kept until "
                        "bot4d-persist drains them.", shard=str(s))
        # written by bot4d-persist in its own counters segment, whose first counters sit at fixed
        # positions (bot4d.persist.sidecar.GLOBAL): listed here so monitors show them while it runs
        self.persist = CounterBlock("persist")
        self.persist.add("bot4d_persist_unconsumed_events", "gauge",
                         "Journal events of this instance that no live consumer takes (seen by bot4d-persist).")
        self.persist.add("bot4d_persist_unconsumed_rings", "gauge",
                         "Journal rings of this instance holding events no live consumer takes.")
        self.persist.add("bot4d_persist_kept_rings", "gauge",
                         "Journals of earlier daemon runs present, kept until bot4d-persist drains them.")
        self.shard_blocks: list[CounterBlock] = []
        for s in range(shards):
            b = CounterBlock(f"ctr-shard{s}")
            sh = str(s)
            b.add("bot4d_shard_heartbeat_age_seconds", "age_ns", "Time since the shard loop last ran.", shard=sh)
            b.add("bot4d_orders_submitted_total", "counter", "Orders sent to venues.", shard=sh)
            b.add("bot4d_orders_filled_total", "counter", "Orders completely filled.", shard=sh)
            for r in reject_reasons:
                b.add("bot4d_orders_rejected_total", "counter", "Orders refused, by reason.", shard=sh, reason=r)
            b.add("bot4d_trading_state", "enum", "Trading state the risk kernel enforces.", TRADING_STATES, shard=sh)
            for r in trip_reasons:
                b.add("bot4d_killswitch_trips_total", "counter", "Kill-switch trips, by reason.", shard=sh, reason=r)
            b.add("bot4d_journal_backpressure_total", "counter", "Journal publishes that had to wait or failed.", shard=sh)
            if shard_series is not None:
                shard_series(b, s)
            self.shard_blocks.append(b)
        self.counters: dict[str, Counters] = {}
        for blk in [self.io, *self.shard_blocks]:
            # the catalog describes each series; the counters segment only needs distinct names
            self.counters[blk.name] = Counters.create(instance, blk.name, [f"c{s.index}" for s in blk.series],
                                                      reclaim_dead=reclaim_dead)
        self.hist_tick_to_order = [LatencyHistogram.create(instance, f"hist-t2o-{s}", reclaim_dead=reclaim_dead)
                                   for s in range(shards)]
        self.hist_order_ack = {v: LatencyHistogram.create(instance, f"hist-ack-{v.lower()}", reclaim_dead=reclaim_dead)
                               for v in venues}
        self.hist_unprotected = [LatencyHistogram.create(instance, f"hist-unprot-{s}", reclaim_dead=reclaim_dead)
                                 for s in range(shards)]
        n = max(1, len(instruments))
        self.books = SnapshotArea.create(instance, "snap-books", BOOK_SNAPSHOT_DTYPE, n, reclaim_dead=reclaim_dead)
        self.positions = SnapshotArea.create(instance, "snap-positions", POSITION_SNAPSHOT_DTYPE, n, reclaim_dead=reclaim_dead)
        self.account = SnapshotArea.create(instance, "account", ACCOUNT_ROW_DTYPE, max(1, shards),
                                           reclaim_dead=reclaim_dead)
        srows = [{"shard": str(s)} for s in range(max(1, shards))]
        q8 = [8] * len(srows)
        rows = [{"venue": v, "symbol": sym} for v, sym, _, _ in instruments]
        pscale = [ps for _, _, ps, _ in instruments]
        qscale = [qs for _, _, _, qs in instruments]
        nscale = [ps + qs for _, _, ps, qs in instruments]
        catalog = {
            "kind": "catalog", "version": CATALOG_VERSION,
            "info": {"version": __version__, "python": platform.python_version(),
                     "numba": numba.__version__, "instance": instance, "config_hash": config_hash,
                     "shards": shards},
            "counters": [s.as_json() for blk in [self.io, *self.shard_blocks, self.persist] for s in blk.series],
            "histograms": [{"segment": f"hist-t2o-{s}", "metric": "bot4d_tick_to_order_seconds",
                            "labels": {"shard": str(s)}, "help": "From a frame read off the socket to the order it caused leaving."}
                           for s in range(shards)] +
                          [{"segment": f"hist-ack-{v.lower()}", "metric": "bot4d_order_ack_seconds",
                            "labels": {"venue": v}, "help": "From an order sent to its acknowledgement."} for v in venues] +
                          [{"segment": f"hist-unprot-{s}", "metric": "bot4d_position_unprotected_seconds",
                            "labels": {"shard": str(s)},
                            "help": "How long a position went without a protective stop covering it at the venue."}
                           for s in range(shards)],
            "snapshots": [
                {"segment": "snap-books", "rows": rows, "fields": [
                    {"field": "state", "metric": "bot4d_book_state", "type": "enum", "enum": BOOK_STATES, "help": "Book state per instrument."},
                    {"field": "best_bid", "metric": "bot4d_book_best_bid", "type": "gauge", "scale": pscale, "help": "Best bid price."},
                    {"field": "best_ask", "metric": "bot4d_book_best_ask", "type": "gauge", "scale": pscale, "help": "Best ask price."},
                    {"field": "last_update_ns", "metric": "bot4d_book_last_update_age_seconds", "type": "age_ns", "help": "Time since the book last changed."}]},
                {"segment": "snap-positions", "rows": rows, "fields": [
                    {"field": "qty", "metric": "bot4d_position", "type": "gauge", "scale": qscale, "help": "Signed position."},
                    {"field": "realised", "metric": "bot4d_pnl_realised", "type": "gauge", "scale": nscale, "help": "Realised P&L in quote currency."},
                    {"field": "unrealised", "metric": "bot4d_pnl_unrealised", "type": "gauge", "scale": nscale, "help": "Unrealised P&L marked to the book."}]},
                {"segment": "account", "rows": srows, "fields": [
                    {"field": "part", "metric": "bot4d_account_equity_contribution", "type": "gauge", "scale": q8,
                     "help": "The shard's part of the account's equity: its instruments' holdings at the mark, realised P&L, fees."},
                    {"field": "committed", "metric": "bot4d_shard_committed_exposure", "type": "gauge", "scale": q8,
                     "help": "The shard's gross exposure if every live order filled on its worse side."},
                    {"field": "max_gross", "metric": "bot4d_shard_exposure_slice", "type": "gauge", "scale": q8,
                     "help": "The shard's slice of risk.max_gross_exposure (9.2e10: no limit)."},
                    {"field": "pass_ns", "metric": "bot4d_account_row_age_seconds", "type": "age_ns",
                     "help": "Time since the shard last published its account row."}]},
            ],
            "rings": [{"segment": f"journal-{s}", "metric": "bot4d_journal_lag_events", "labels": {"shard": str(s)},
                       "help": "Journal events not yet persisted (producer minus slowest gating consumer)."}
                      for s in range(shards)],
        }
        # the description outgrows a segment header's meta: it is the catalog segment's payload,
        # written before the segment is published, so no monitor ever reads a half-written one
        blob = json.dumps(catalog, separators=(",", ":")).encode()

        def fill(seg: Segment) -> None:
            seg.array(0, np.uint8, len(blob))[:] = np.frombuffer(blob, np.uint8)

        self.catalog = Segment.create(instance, CATALOG, len(blob),
                                      {"kind": "catalog", "version": CATALOG_VERSION, "bytes": len(blob)},
                                      reclaim_dead=reclaim_dead, init=fill)

    def counter_array(self, block: str) -> np.ndarray:
        return self.counters[block].values

    def heartbeat(self, now_ns: int | None = None) -> None:
        """Stamp the io thread's heartbeat (CLOCK_MONOTONIC ns, as monitors read it)."""
        self.catalog.heartbeat(now_ns)

    def close(self, unlink: bool = True) -> None:
        """Unmap everything; with ``unlink`` (a clean stop) also remove the names from /dev/shm."""
        for s in [*self.counters.values(), *self.hist_tick_to_order, *self.hist_order_ack.values(),
                  *self.hist_unprotected, self.books, self.positions, self.account, self.catalog]:
            if unlink:
                s.unlink()
            s.close()
