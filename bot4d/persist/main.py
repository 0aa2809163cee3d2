"""``bot4d-persist``: schema migrations and the journal-to-PostgreSQL sidecar.

    bot4d-persist migrate --dsn DSN           apply pending migrations (refuses a newer database)
    bot4d-persist status  --dsn DSN           schema version, storage mode, per-shard cursors
    bot4d-persist run --dsn DSN --instance X --shards 0,1
                                              drain journals until SIGTERM/SIGINT, following the
                                              daemon across restarts (kept journals of earlier
                                              runs first); exit 2 on a fatal error (undecodable
                                              record, schema mismatch, rows refused by a
                                              database constraint, a catalog contradicting the
                                              instruments table); warns about journals of the
                                              instance no consumer drains (--alarm-after)
    bot4d-persist register --dsn DSN --instance X
                                              add the instruments of instance X's catalog the
                                              database lacks (run does it too); exit 1 without
                                              a catalog, 2 on a conflict or unreadable catalog

The DSN may also come from ``$BOT4D_PG_DSN``.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

import psycopg

from bot4d.persist import schema


def _dsn(args: argparse.Namespace) -> str:
    dsn = args.dsn or os.environ.get("BOT4D_PG_DSN")
    if not dsn:
        raise SystemExit("bot4d-persist: no database: pass --dsn or set BOT4D_PG_DSN")
    return dsn


def _shards(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        if "-" in part:
            a, b = part.split("-", 1)
            out.extend(range(int(a), int(b) + 1))
        elif part:
            out.append(int(part))
    if not out or any(s < 0 for s in out) or len(set(out)) != len(out):
        raise argparse.ArgumentTypeError(f"bad shard list {text!r}")
    return out


def cmd_migrate(args: argparse.Namespace) -> int:
    try:
        v = schema.migrate(_dsn(args), mode=args.mode)
    except schema.SchemaError as e:
        print(f"bot4d-persist: {e}", file=sys.stderr)
        return 2
    with psycopg.connect(_dsn(args)) as c:
        print(f"schema version {v}, storage mode {schema.storage_mode(c)}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    with psycopg.connect(_dsn(args)) as c:
        have = schema.current_version(c)
        mode = schema.storage_mode(c) if have else "-"
        print(f"schema version {have} (code {schema.code_version()}), storage mode {mode}")
        if have:
            for shard, last, at in c.execute(
                    "SELECT shard, last_seq, updated_at FROM journal_cursor ORDER BY shard"):
                print(f"shard {shard}: last persisted seq {last} at {at}")
    return 0


def cmd_register(args: argparse.Namespace) -> int:
    from bot4d.monitor.catalog import NoCatalog
    from bot4d.persist.register import RegistrationError, register_from_catalog
    from ipc.segment import SegmentError

    try:
        with psycopg.connect(_dsn(args)) as c:
            schema.check(c)
            got = register_from_catalog(c, args.instance)
    except NoCatalog as e:
        print(f"bot4d-persist: no catalog for instance {args.instance!r} (is the daemon running?): {e}",
              file=sys.stderr)
        return 1
    except (schema.SchemaError, RegistrationError, SegmentError) as e:
        print(f"bot4d-persist: {e}", file=sys.stderr)
        return 2
    except psycopg.OperationalError as e:
        print(f"bot4d-persist: cannot reach the database: {str(e).strip()}", file=sys.stderr)
        return 2
    for i in got.added:
        print(f"registered instrument {i.id}: {i.venue} {i.symbol} price_scale {i.price_scale} "
              f"qty_scale {i.qty_scale} quote_scale {i.price_scale + i.qty_scale}")
    print(f"{len(got.added)} instrument(s) added, {got.present} already registered")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from bot4d.persist.sidecar import BacklogWatch, PumpConfig, counter_names, run_pumps
    from ipc.counters import Counters

    dsn = _dsn(args)
    from bot4d.persist import copykern

    copykern.warmup()  # load/compile the COPY encoders before the first batch, not during it
    from bot4d.records import JOURNAL_EVENT_DTYPE
    from ipc.ring import warmup_dtype

    warmup_dtype(JOURNAL_EVENT_DTYPE, readonly_too=False)  # read_batch/commit for journal records
    from ipc.segment import SegmentError

    try:
        counters = Counters.create(args.instance, args.counters, counter_names(args.shards), reclaim_dead=True)
    except SegmentError as e:
        # a live owner holds it: another sidecar drains this instance; two would fight over slots
        print(f"bot4d-persist: {e}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        logging.getLogger("bot4d.persist").info("signal %d: finishing the current batch", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    cfgs = [PumpConfig(dsn, args.instance, s, ring_name=args.ring_name, slot=args.slot, batch=args.batch,
                       ring_wait_s=args.ring_wait) for s in args.shards]
    watch = BacklogWatch(args.instance, args.ring_name, args.shards, counters, alarm_after_s=args.alarm_after)
    try:
        return run_pumps(cfgs, counters=counters, stop=stop, watch=watch)
    finally:
        # the counters area belongs to this process: monitors should not read a dead sidecar's lag
        counters.unlink()
        counters.close()


def main(argv: list[str] | None = None) -> int:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--dsn", help="libpq connection string (default: $BOT4D_PG_DSN)")
    common.add_argument("-v", "--verbose", action="store_true")
    ap = argparse.ArgumentParser(prog="bot4d-persist", description="bot4d journal persistence")
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("migrate", parents=[common], help="apply pending schema migrations")
    m.add_argument("--mode", choices=["native", "timescaledb"], default=None,
                   help="storage of time-series tables (default: timescaledb when installed)")
    sub.add_parser("status", parents=[common], help="schema version and journal cursors")
    g = sub.add_parser("register", parents=[common], help="register the instruments of a daemon's catalog")
    g.add_argument("--instance", required=True)
    r = sub.add_parser("run", parents=[common], help="drain journal rings into PostgreSQL")
    r.add_argument("--instance", required=True)
    r.add_argument("--shards", type=_shards, required=True, help="e.g. 0,1 or 0-3")
    r.add_argument("--ring-name", default="journal-{shard}")
    r.add_argument("--slot", type=int, default=0, help="gating slot of the journal rings")
    r.add_argument("--batch", type=int, default=32768)
    r.add_argument("--counters", default="persist", help="name of the counters segment")
    r.add_argument("--ring-wait", type=float, default=None,
                   help="seconds to wait for a journal ring to appear (default: forever)")
    r.add_argument("--alarm-after", type=float, default=5.0,
                   help="log a journal of the instance whose backlog no consumer takes after this many "
                        "seconds (it is counted in the persist counters at once)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s bot4d-persist %(levelname)s %(message)s")
    return {"migrate": cmd_migrate, "status": cmd_status, "register": cmd_register,
            "run": cmd_run}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
