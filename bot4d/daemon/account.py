"""The account risk area: every shard's share of the account's equity and exposure in shared memory,
so that daily loss, drawdown, position-% and gross exposure hold for the account, not per shard.

A shard owns some instruments, the account owns them all. Each shard publishes one row of the
``account`` segment (a seqlock snapshot area, ``ipc.seqlock``; created by ``bot4d.telemetry``, so
monitors read it too) and only that shard writes it, once per pass of its loop:

* ``part``: its part of the account's equity in risk quote units (10**-8): its instruments'
  holdings (neutral base + position) at the mark, realised P&L, minus fees, and the value a
  position found at start had at its first mark (``ShardInst.equity0``), + the holdings found at
  start below one quantity step of their instrument (``dust``, at the mark: a balance with more
  decimals than the instrument's step, e.g. after a commission paid in the base asset or BNB);
* ``valued``: 1 once every holding of its instruments has a mark;
* ``gross``: sum of |position| x mark of its instruments; ``committed``: the worst case with its
  live orders (``risk.committed_exposure``), which its exposure slice bounds; ``max_gross``: that
  slice;
* the account figures it measured: equity, peak, the trading day's start equity and day number.

Each pass (and before every pre-trade check) a shard computes the account's equity as the quote
balances counted once at reconciliation (``AV_BASE``, the same in every shard) + its own fresh
part + every other shard's last published part, and feeds THAT to ``risk.update_equity``, to the
risk checks (position-% of the account's equity, daily loss against the account's day start,
drawdown against the account's peak) and to the kill switch: every shard sees an account-wide loss
within one pass and trips. Until every row is published and valued there is no valuation: no peak
or day start is recorded and nothing opens. Peak and day start are each shard's record of the same
account equity (no shard waits for another or writes another's words); they differ at most by what
the account's equity moved between two shards' passes.

Gross exposure needs no reading at all: the account's limit is split into per-shard slices that
add up to at most the limit (``slices``), each shard refuses an opening order that would take its
own committed exposure over its slice (``risk.REJ_GROSS_EXPOSURE``), so the account stays within
the limit even when shards decide at the same moment.

A reader's copy of a row is taken with the seqlock protocol; a copy that cannot be taken in
``MAX_TRIES`` (the writer died mid-write) leaves the last consistent one in place.
"""
from __future__ import annotations

import time
from decimal import ROUND_FLOOR, Decimal
from typing import Any, NamedTuple

import numpy as np

from bot4d.fixedpoint import from_fixed
from bot4d.jitcache import drop_stale_cache, files, kernel
from bot4d.kernels.risk import INT64_MAX, QUOTE_SCALE
from bot4d.telemetry import ACCOUNT_ROW_DTYPE
from ipc import atomics, seqlock as SL
from ipc.seqlock import SnapshotArea

drop_stale_cache(__file__, files(SL, atomics))   # the seqlock's kernels are compiled in

MAX_TRIES = 64           # seqlock read attempts before the last consistent copy is kept

# AccountView.words
AV_BASE = 0              # quote balances at reconciliation, counted once (written before the shards start)
AV_ME = 1                # this shard's row
AV_N = 8


class AccountView(NamedTuple):
    """One shard's handle on the account area."""
    rows: np.ndarray     # ACCOUNT_ROW_DTYPE[n_shards]: the shared records
    seqs: np.ndarray     # their seqlock versions
    copy: np.ndarray     # ACCOUNT_ROW_DTYPE[n_shards + 1]: last consistent copy of each row, + scratch
    words: np.ndarray    # int64[AV_N]
    dust: np.ndarray     # int64[n] base held beyond the instrument's quantity step, 10**-8 units (set_dust)
    px_one: np.ndarray   # int64[n] 10**price_scale of each instrument
    mids: np.ndarray     # int64[n] the shard's marks (the same array as ShardInst.mids)


def view(area: SnapshotArea, shard: int, mids: np.ndarray | None = None,
         price_scales: list[int] | None = None) -> AccountView:
    """Shard ``shard``'s view of the area (its own row is ``shard``); ``mids``: the shard's marks,
    which value its instruments' dust (``price_scales`` their price scales)."""
    if not 0 <= shard < area.n:
        raise ValueError(f"shard {shard} has no row in an account area of {area.n}")
    w = np.zeros(AV_N, np.int64)
    w[AV_ME] = shard
    if mids is None:
        mids = np.zeros(1, np.int64)
    n = len(mids)
    ps = list(price_scales) if price_scales is not None else [0] * n
    if len(ps) != n:
        raise ValueError(f"{len(ps)} price scales for {n} instruments")
    return AccountView(area.records, area.seqs, np.zeros(area.n + 1, ACCOUNT_ROW_DTYPE), w,
                       np.zeros(n, np.int64), np.array([10 ** p for p in ps], np.int64), mids)


DUST_SCALE = 8   # balances come with up to 8 decimals (Binance); finer is dropped, rounded down


def split_holding(held: Decimal, qty_scale: int) -> tuple[int, Decimal]:
    """A balance as (quantity units of the instrument, rounded down; what is left below one
    unit). A position lives in quantity units; the rest is still the account's money."""
    units = int(held.scaleb(qty_scale).to_integral_value(rounding=ROUND_FLOOR))
    return units, held - Decimal(units).scaleb(-qty_scale)


def set_dust(av: AccountView, instrument: int, dust: Decimal) -> None:
    """At reconciliation, before the shards start: ``dust`` base units of ``instrument`` held
    below its quantity step, valued at the mark in this shard's part of equity."""
    if dust < 0:
        raise ValueError(f"instrument {instrument}: negative dust {dust}")
    av.dust[instrument] = int(dust.scaleb(DUST_SCALE).to_integral_value(rounding=ROUND_FLOOR))


@kernel(_nrt=False)
def dust_value(av):
    """The dust of this shard's instruments at their marks, risk quote units (10**-8): dust
    (10**-8 base) x mark (10**-price_scale quote) / 10**price_scale, split so it cannot overflow."""
    v = np.int64(0)
    for i in range(av.dust.shape[0]):
        d = av.dust[i]
        m = av.mids[i]
        if d != 0 and m > 0:
            p = av.px_one[i]
            v += (d // p) * m + (d % p) * m // p
    return v


@kernel(_nrt=False)
def account_equity(av, part, valued):
    """(account equity, whether it is a full valuation) from this shard's fresh ``part`` (``valued``:
    every holding of it has a mark) and every other shard's last published row."""
    eq = av.words[AV_BASE] + part + dust_value(av)
    whole = valued
    me = av.words[AV_ME]
    n = av.rows.shape[0]
    for s in range(n):
        if s == me:
            continue
        if SL.read(av.rows, av.seqs, s, av.copy, n, MAX_TRIES) >= 0:
            av.copy[s] = av.copy[n]
        r = av.copy[s]
        if r.pass_ns == 0 or r.valued == 0:
            whole = False   # a shard not yet running, or with a holding not yet marked
        eq += r.part
    return eq, whole


@kernel(_nrt=False)
def publish(av, now, part, valued, gross, committed, max_gross, equity, peak, day_start, day):
    """Write this shard's row (its single writer)."""
    me = av.words[AV_ME]
    SL.write_begin(av.seqs, me)
    r = av.rows[me]
    r.part = part + dust_value(av)   # what account_equity adds to this shard's part, for the others
    r.valued = 1 if valued else 0
    r.gross = gross
    r.committed = committed
    r.max_gross = max_gross
    r.equity = equity
    r.peak = peak
    r.day_start = day_start
    r.day = day
    r.pass_ns = now
    SL.write_end(av.seqs, me)


def reset(av: AccountView, base: int) -> None:
    """At reconciliation, before the shards start: the account's quote balances, and no row counts
    until its shard published it from a running loop (the warm-up's passes do not)."""
    av.rows[:] = np.zeros(1, ACCOUNT_ROW_DTYPE)
    av.copy[:] = np.zeros(1, ACCOUNT_ROW_DTYPE)
    av.words[AV_BASE] = base


def slices(max_gross: int | None, split_pct: tuple[int, ...] | None, n_shards: int) -> list[int]:
    """Each shard's part of the account's gross-exposure limit (quote units), rounded down so that
    they never add up to more than the limit; INT64_MAX each when there is no limit. ``split_pct``:
    percentages per shard adding up to 100 (None: equal parts)."""
    if max_gross is None:
        return [INT64_MAX] * n_shards
    if split_pct is None:
        return [max_gross // n_shards] * n_shards
    if len(split_pct) != n_shards or sum(split_pct) != 100 or min(split_pct) < 0:
        raise ValueError(f"split {split_pct} must be {n_shards} percentages adding up to 100")
    return [max_gross * p // 100 for p in split_pct]


# --- what monitors and bot4ctl see -----------------------------------------------------------------
def _q(v: int) -> str:
    return str(from_fixed(int(v), QUOTE_SCALE))


def _limit(v: int) -> str | None:
    return None if v >= INT64_MAX else _q(v)


def read_rows(area: SnapshotArea) -> list[np.void]:
    """A consistent copy of every row (the seqlock protocol, from Python)."""
    return [area.read(s) for s in range(area.n)]


def totals(rows: list[np.void], base: int) -> dict[str, Any]:
    """The account's figures from the rows, as integers in quote units: equity (base + every
    part), whether that is a full valuation, the peak and the trading day's start the shards
    measure against (the highest of their records, of the latest day), gross and committed
    exposure, and the limit (sum of the slices; INT64_MAX: none)."""
    whole = bool(rows) and all(int(r["pass_ns"]) > 0 and int(r["valued"]) for r in rows)
    day = max((int(r["day"]) for r in rows), default=-1)
    return {
        "equity": base + sum(int(r["part"]) for r in rows), "valued": whole,
        "peak": max((int(r["peak"]) for r in rows), default=0),
        "day_start": max((int(r["day_start"]) for r in rows if int(r["day"]) == day), default=0),
        "day": day,
        "gross": sum(int(r["gross"]) for r in rows), "committed": sum(int(r["committed"]) for r in rows),
        "max_gross": min(INT64_MAX, sum(int(r["max_gross"]) for r in rows)),
    }


def summary(area: SnapshotArea, base: int, now_ns: int | None = None) -> dict[str, Any]:
    """``bot4ctl risk``'s account section: figures in quote currency (Decimal strings)."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    rows = read_rows(area)
    t = totals(rows, base)
    eq, start = t["equity"], t["day_start"]
    return {
        "equity": _q(eq), "valued": t["valued"], "quote_balances": _q(base),
        "day_start_equity": _q(start), "peak_equity": _q(t["peak"]),
        "daily_loss": _q(max(0, start - eq)) if t["valued"] and t["day"] >= 0 else None,
        "drawdown": _q(max(0, t["peak"] - eq)) if t["valued"] and t["peak"] > 0 else None,
        "gross_exposure": _q(t["gross"]), "committed_exposure": _q(t["committed"]),
        "max_gross_exposure": _limit(t["max_gross"]),
        "shards": {str(s): {"contribution": _q(r["part"]), "valued": bool(r["valued"]),
                            "gross_exposure": _q(r["gross"]), "committed_exposure": _q(r["committed"]),
                            "exposure_slice": _limit(int(r["max_gross"])),
                            "last_pass_age_s": round(max(0, now_ns - int(r["pass_ns"])) / 1e9, 3)
                            if int(r["pass_ns"]) else None}
                   for s, r in enumerate(rows)},
    }


def telemetry_values(area: SnapshotArea, base: int) -> dict[str, int]:
    """The account series of the io thread's counters segment (``bot4d.telemetry``), quote units;
    the limit 0 when there is none."""
    t = totals(read_rows(area), base)
    return {"bot4d_account_equity": t["equity"] if t["valued"] else 0,
            "bot4d_account_peak_equity": t["peak"], "bot4d_account_day_start_equity": t["day_start"],
            "bot4d_account_gross_exposure": t["gross"], "bot4d_account_committed_exposure": t["committed"],
            "bot4d_account_gross_exposure_limit": 0 if t["max_gross"] >= INT64_MAX else t["max_gross"]}


def warmup() -> None:
    area_rows = np.zeros(2, ACCOUNT_ROW_DTYPE)
    seqs = np.zeros(2 * SL.CL, np.int64)
    w = np.zeros(AV_N, np.int64)
    av = AccountView(area_rows, seqs, np.zeros(3, ACCOUNT_ROW_DTYPE), w, np.ones(1, np.int64),
                     np.ones(1, np.int64), np.ones(1, np.int64))
    publish(av, 1, 0, True, 0, 0, INT64_MAX, 0, 0, 0, -1)
    account_equity(av, 0, True)
