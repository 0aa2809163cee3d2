"""``bot4d-exporter``: Prometheus ``/metrics`` rendered at scrape time from the daemon's shared memory.

A prometheus-client custom collector attaches (read-only) to the instance's catalog on each scrape
and renders what it lists; when there is no daemon, or its owner process is gone, the scrape says
``bot4d_up 0`` instead of failing. The daemon's CPU and memory come from psutil by the catalog's
owner pid. Imports ``ipc``, ``prometheus_client`` and ``psutil`` only.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from typing import Iterator

import psutil
from prometheus_client import start_http_server
from prometheus_client.core import (CollectorRegistry, CounterMetricFamily, GaugeMetricFamily,
                                    HistogramMetricFamily, Metric)
from prometheus_client.registry import Collector

from bot4d.monitor.catalog import DaemonView
from ipc.segment import SegmentError

log = logging.getLogger("bot4d.exporter")


class DaemonCollector(Collector):
    """Renders the daemon's shared memory; reads it at most once per ``min_interval_s``.

    A scraper hammering /metrics must not turn into a monitor polling the daemon's cache lines in
    a tight loop (that slows the writer several times over): scrapes inside the interval get the
    previous reading.
    """

    def __init__(self, instance: str, min_interval_s: float = 0.1):
        self.instance = instance
        self.min_interval_s = min_interval_s
        self._view: DaemonView | None = None
        self._lock = threading.Lock()  # scrapes may overlap; the view is not thread-safe
        self._cached: list[Metric] = []
        self._cached_at = float("-inf")

    def _attach(self) -> DaemonView | None:
        if self._view is not None and self._view.alive():
            return self._view
        if self._view is not None:
            self._view.close()
            self._view = None
        try:
            v = DaemonView(self.instance)
        except SegmentError:
            return None
        if not v.alive():
            v.close()
            return None
        self._view = v
        return v

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            now = time.monotonic()
            if now - self._cached_at >= self.min_interval_s:
                self._cached = list(self._collect())
                self._cached_at = now
            metrics = self._cached
        yield from metrics

    def _collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("bot4d_up", "1 when the daemon's shared memory is live and its owner runs.",
                               labels=["instance"])
        view = self._attach()
        up.add_metric([self.instance], 1.0 if view is not None else 0.0)
        yield up
        if view is None:
            return
        info = view.info
        bi = GaugeMetricFamily("bot4d_build_info", "Build of the running daemon.",
                               labels=["version", "python", "numba"])
        bi.add_metric([str(info.get("version", "")), str(info.get("python", "")), str(info.get("numba", ""))], 1.0)
        yield bi
        ci = GaugeMetricFamily("bot4d_config_info", "Configuration of the running daemon.",
                               labels=["instance", "config_hash", "shards"])
        ci.add_metric([self.instance, str(info.get("config_hash", "")), str(info.get("shards", ""))], 1.0)
        yield ci
        hb = GaugeMetricFamily("bot4d_heartbeat_age_seconds", "Time since the daemon's io thread last beat.")
        hb.add_metric([], max(0.0, view.catalog.heartbeat_age_s()))
        yield hb

        families: dict[str, Metric] = {}
        for s in view.samples():
            name = s.metric[: -len("_total")] if s.type == "counter" and s.metric.endswith("_total") else s.metric
            fam = families.get(s.metric)
            keys = sorted(s.labels)
            if fam is None:
                cls = CounterMetricFamily if s.type == "counter" else GaugeMetricFamily
                fam = families[s.metric] = cls(name, s.help, labels=keys)
            fam.add_metric([s.labels[k] for k in keys], s.value)
        yield from families.values()

        hists: dict[str, HistogramMetricFamily] = {}
        for h in view.histograms():
            keys = sorted(h.labels)
            fam = hists.get(h.metric)
            if fam is None:
                fam = hists[h.metric] = HistogramMetricFamily(h.metric, h.help, labels=keys)
            buckets = [(repr(b), float(c)) for b, c in zip(h.upper_bounds_s, h.cumulative)]
            buckets.append(("+Inf", float(h.count)))
            fam.add_metric([h.labels[k] for k in keys], buckets, h.sum_s)
        yield from hists.values()

        try:
            p = psutil.Process(view.owner_pid)
            with p.oneshot():
                t = p.cpu_times()
                rss = p.memory_info().rss
        except psutil.Error:
            return
        cpu = CounterMetricFamily("bot4d_process_cpu_seconds", "CPU time of the daemon process.", labels=["mode"])
        cpu.add_metric(["user"], t.user)
        cpu.add_metric(["system"], t.system)
        yield cpu
        mem = GaugeMetricFamily("bot4d_process_resident_memory_bytes", "Resident memory of the daemon process.")
        mem.add_metric([], float(rss))
        yield mem


def registry_for(instance: str, min_interval_s: float = 0.1) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(DaemonCollector(instance, min_interval_s))
    return reg


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bot4d-exporter", description=__doc__.splitlines()[0])
    ap.add_argument("--instance", default="main")
    ap.add_argument("--listen", default="127.0.0.1:9464", help="host:port for /metrics")
    ap.add_argument("--min-interval", type=float, default=0.1,
                    help="seconds between reads of shared memory, however often /metrics is scraped")
    args = ap.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    try:
        port_n = int(port)
    except ValueError:
        print(f"bot4d-exporter: --listen must be host:port, got {args.listen!r}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    server, thread = start_http_server(port_n, addr=host or "127.0.0.1", registry=registry_for(args.instance, max(0.01, args.min_interval)))
    log.info("serving http://%s:%d/metrics for instance %r", host or "127.0.0.1", server.server_port, args.instance)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(1.0):
        pass
    server.shutdown()
    return 0


