"""Straightforward pure-Python pre-trade risk: the benchmark baseline and the kernel's cross-check
(``tests/test_risk_props.py``, ``bench/bench_risk.py``); the daemon never runs it.

Same rules as :mod:`bot4d.kernels.risk` (read its docstring), written the obvious way with Python
ints (exact, unbounded) over Python lists and dicts. Overflow is therefore detected by comparing
exact results with INT64_MAX rather than by the kernel's pre-multiplication guards, so agreement
between the two is evidence that the guards are right.
"""
from __future__ import annotations

import math

import numpy as np

from bot4d.kernels import risk as R
from bot4d.kernels.killswitch import K_STATE, TS_HALTED, TS_REDUCING
from bot4d.records import CMD_CANCEL, CMD_PLACE, CMD_REPLACE, INTENT_FLAG_WANTS_SIZING, SIDE_ASK, SIDE_BID

MAX = R.INT64_MAX


class RefRisk:
    def __init__(self, rs: R.RiskState, corr: np.ndarray) -> None:
        self.cfg = [int(x) for x in rs.cfg]
        self.inst = [[int(x) for x in row] for row in rs.inst]
        self.acct = [int(x) for x in rs.acct]
        self.strat = [[int(x) for x in row] for row in rs.strat]
        self.bucket = [[int(x) for x in row] for row in rs.bucket]
        self.state = int(rs.ks[K_STATE])
        self.corr = [[float(x) for x in row] for row in corr]

    def _notional(self, px: int, qty: int, row: list[int]) -> int | None:
        v = px * qty
        if v > MAX:
            return None
        v = v // row[R.I_NOTIONAL_DIV] * row[R.I_NOTIONAL_MUL]
        return None if v > MAX else v

    def _refill(self, v: int, now: int) -> None:
        b = self.bucket[v]
        el = now - b[R.B_LAST_NS]
        if el <= 0:
            return
        cap = b[R.B_CAPACITY] * R.TOKEN
        if b[R.B_RATE] > 0:
            b[R.B_TOKENS] = min(cap, b[R.B_TOKENS] + el * b[R.B_RATE])
        b[R.B_LAST_NS] = now

    def _decide(self, it: dict, pos, oo, ob, osl, mid, work, now) -> tuple[int, int]:
        cmd, i, side = it["command"], it["instrument"], it["side"]
        if cmd not in (CMD_PLACE, CMD_CANCEL, CMD_REPLACE):
            return R.REJ_BAD_COMMAND, 0
        if not 0 <= i < len(self.inst):
            return R.REJ_BAD_INSTRUMENT, 0
        if cmd == CMD_CANCEL:
            return R.ACCEPT, 0
        if side not in (SIDE_BID, SIDE_ASK):
            return R.REJ_BAD_COMMAND, 0
        if self.state == TS_HALTED:
            return R.REJ_HALTED, 0
        row = self.inst[i]
        if not row[R.I_ENABLED]:
            return R.REJ_INSTRUMENT_DISABLED, 0
        px = it["price"]
        if px < 0:
            return R.REJ_BAD_PRICE, 0
        m = mid[i]
        if m <= 0:
            return R.REJ_NO_MARKET_DATA, 0
        ref = px if px > 0 else m
        qty = it["qty"]
        eq = self.acct[R.A_EQUITY]
        if it["flags"] & INTENT_FLAG_WANTS_SIZING:
            s = it["strategy"]
            if not 0 <= s < len(self.strat):
                return R.REJ_KELLY_NO_STATS, 0
            w, lo, sw, sl = self.strat[s]
            if w + lo < self.cfg[R.C_KELLY_MIN_TRADES] or w <= 0 or sw <= 0:
                return R.REJ_KELLY_NO_STATS, 0
            f = w * (float(sw) - float(sl)) / ((w + lo) * float(sw))
            f_bps = min(int(f * 10000.0) if f > 0 else 0, self.cfg[R.C_KELLY_CAP_BPS])
            if f_bps <= 0 or eq <= 0:
                return R.REJ_KELLY_NO_EDGE, 0
            budget = eq * f_bps // 10000
            if budget * row[R.I_NOTIONAL_DIV] > MAX:
                return R.REJ_OVERFLOW, 0
            sized = budget * row[R.I_NOTIONAL_DIV] // min(MAX, row[R.I_NOTIONAL_MUL] * ref)
            if qty > 0:
                sized = min(sized, qty)
            if sized <= 0:
                return R.REJ_KELLY_NO_EDGE, 0
            qty = sized
        if qty <= 0:
            return R.REJ_BAD_QTY, 0
        if qty > row[R.I_MAX_QTY]:
            return R.REJ_MAX_QTY, 0
        if px > 0 and abs(px - m) * 10000 > row[R.I_BAND_BPS] * m:
            return R.REJ_PRICE_BAND, 0
        notional = self._notional(ref, qty, row)
        if notional is None:
            return R.REJ_OVERFLOW, 0
        if notional > row[R.I_MAX_NOTIONAL]:
            return R.REJ_MAX_NOTIONAL, 0
        p = pos[i]
        wk = work.setdefault(i, [0, 0, 0])
        if side == SIDE_BID:
            same = ob[i] + wk[0]
            reduces = p < 0 and same + qty <= -p
        else:
            same = osl[i] + wk[1]
            reduces = p > 0 and same + qty <= p
        if self.state == TS_REDUCING and not reduces:
            return R.REJ_REDUCING, 0
        if not reduces:
            sp = it["stop_price"]
            if sp == 0:
                return R.REJ_NO_STOP_LOSS, 0
            if (side == SIDE_BID and not 0 < sp < ref) or (side == SIDE_ASK and sp <= ref):
                return R.REJ_BAD_STOP_LOSS, 0
            a = self.acct
            if a[R.A_DAY_START_EQUITY] - a[R.A_EQUITY] > self.cfg[R.C_MAX_DAILY_LOSS]:
                return R.REJ_DAILY_LOSS, 0
            peak = a[R.A_PEAK_EQUITY]
            if peak > 0 and eq < peak and (eq <= 0 or (peak - eq) * 10000 > self.cfg[R.C_MAX_DD_BPS] * peak):
                return R.REJ_DRAWDOWN, 0
            worst = p + same + qty if side == SIDE_BID else -(p - same - qty)
            if worst > MAX:
                return R.REJ_OVERFLOW, 0
            limit = eq * self.cfg[R.C_MAX_POS_BPS] // 10000 if eq > 0 else 0
            wn = self._notional(m, worst, row)
            if wn is None or wn > limit:
                return R.REJ_MAX_POSITION, 0
            max_gross = self.cfg[R.C_MAX_GROSS]
            if max_gross < MAX:
                # committed gross exposure: every instrument's worst-case |position| at its mid,
                # before and after this order (exact ints: no saturation needed)
                def exposure(j: int, buy: int = 0, sell: int = 0) -> int:
                    wj = work.get(j, [0, 0, 0])
                    up = pos[j] + ob[j] + wj[0] + buy
                    dn = pos[j] - osl[j] - wj[1] - sell
                    w = max(up, -dn)
                    if mid[j] <= 0 or w <= 0:
                        return 0
                    v = self._notional(mid[j], w, self.inst[j])
                    return MAX if v is None else v
                total = sum(exposure(j) for j in range(len(pos)))
                after = total - exposure(i) + exposure(i, *((qty, 0) if side == SIDE_BID else (0, qty)))
                # an order that does not grow the exposure is not refused by it
                if after > max_gross and after > total:
                    return R.REJ_GROSS_EXPOSURE, 0
            d = 1 if side == SIDE_BID else -1
            cap = self.cfg[R.C_CORR_CAP_BPS] / 10000.0
            for j, pj in enumerate(pos):
                if j == i or pj == 0:
                    continue
                c = self.corr[i][j]
                if math.isnan(c):
                    continue
                if d * (1 if pj > 0 else -1) * c > cap:
                    return R.REJ_CORRELATION, 0
        if cmd == CMD_PLACE and oo[i] + wk[2] >= row[R.I_MAX_OPEN_ORDERS]:
            return R.REJ_MAX_OPEN_ORDERS, 0
        v = row[R.I_VENUE]
        self._refill(v, now)
        if self.bucket[v][R.B_TOKENS] < R.TOKEN:
            return R.REJ_RATE_LIMIT, 0
        self.bucket[v][R.B_TOKENS] -= R.TOKEN
        wk[0 if side == SIDE_BID else 1] += qty
        if cmd == CMD_PLACE:
            wk[2] += 1
        return R.ACCEPT, qty

    def check(self, intents: list[dict], pos: list[int], oo: list[int], ob: list[int],
              osl: list[int], mid: list[int], now: int) -> tuple[list[int], list[int]]:
        dec = [0] * len(intents)
        qty = [0] * len(intents)
        work: dict[int, list[int]] = {}
        aon = self.cfg[R.C_POLICY] == R.POLICY_ALL_OR_NONE
        k = 0
        while k < len(intents):
            bid = intents[k]["batch_id"]
            e = k + 1
            while bid != 0 and e < len(intents) and intents[e]["batch_id"] == bid:
                e += 1
            failed = None
            for j in range(k, e):
                if failed is not None and aon:
                    dec[j] = R.REJ_BATCH_PEER
                    continue
                dec[j], qty[j] = self._decide(intents[j], pos, oo, ob, osl, mid, work, now)
                if dec[j] != R.ACCEPT and failed is None:
                    failed = j
            if failed is not None and aon and e - k > 1:
                for j in range(k, e):
                    if j < failed and intents[j]["command"] != CMD_CANCEL:
                        it = intents[j]
                        wk = work[it["instrument"]]
                        wk[0 if it["side"] == SIDE_BID else 1] -= qty[j]
                        if it["command"] == CMD_PLACE:
                            wk[2] -= 1
                        self.bucket[self.inst[it["instrument"]][R.I_VENUE]][R.B_TOKENS] += R.TOKEN
                    if j != failed:
                        dec[j] = R.REJ_BATCH_PEER
                        qty[j] = 0
            k = e
        return dec, qty


def intents_to_dicts(intents: np.ndarray) -> list[dict]:
    keys = ("command", "instrument", "side", "price", "qty", "stop_price", "batch_id", "flags",
            "strategy")
    return [{k: int(r[k]) for k in keys} for r in intents]
