"""Pre-trade risk kernel: one test per reject reason, batches, trading states, Kelly sizing."""
from __future__ import annotations

import numpy as np
import pytest

from bot4d.kernels import risk as R
from bot4d.kernels.killswitch import K_STATE, TS_HALTED, TS_REDUCING
from bot4d.records import (
    CMD_CANCEL,
    CMD_PLACE,
    CMD_REPLACE,
    EV_RISK_REJECT,
    INTENT_FLAG_WANTS_SIZING,
    ORDER_INTENT_DTYPE,
    SIDE_ASK,
    SIDE_BID,
)
from tests.risk_engine import RiskEngine

USD = 10**8                      # quote scale 8
EQUITY = 1_000_000 * USD         # 1 M USD
MID = 50_000_00                  # 50,000.00 at price scale 2
BTC = 10**8                      # qty scale 8
T0 = 1_700_000_000_000_000_000


class Book:
    """Risk arrays plus the OMS-owned inputs, for 4 instruments on 2 venues."""

    def __init__(self, policy: int = R.POLICY_ALL_OR_NONE) -> None:
        self.rs = R.make_risk(4, n_venues=2, n_strategies=2)
        R.set_limits(self.rs, max_daily_loss=20_000 * USD, policy=policy)
        for i in range(4):
            R.set_instrument(self.rs, i, venue=i % 2, price_scale=2, qty_scale=8, max_qty=BTC,
                             max_notional=60_000 * USD, max_open_orders=3, band_bps=500)
        for v in range(2):
            R.set_venue_rate(self.rs, v, capacity=5, per_second=5, now_ns=T0)
        R.update_equity(self.rs.acct, EQUITY, T0)
        self.eng = RiskEngine(self.rs, max_batch=256)
        self.pos = np.zeros(4, np.int64)
        self.oo = np.zeros(4, np.int64)
        self.ob = np.zeros(4, np.int64)
        self.osl = np.zeros(4, np.int64)
        self.mid = np.full(4, MID, np.int64)

    def check(self, intents: np.ndarray, now: int = T0) -> tuple[list[int], list[int]]:
        d, q = self.eng.check(intents, self.pos, self.oo, self.ob, self.osl, self.mid, now)
        return d.tolist(), q.tolist()


def intent(n: int = 1, **kw) -> np.ndarray:
    """A valid opening buy of 0.1 BTC at the mid with a stop 2 % below."""
    it = np.zeros(n, ORDER_INTENT_DTYPE)
    it["command"] = CMD_PLACE
    it["side"] = SIDE_BID
    it["price"] = MID
    it["qty"] = BTC // 10
    it["stop_price"] = MID * 98 // 100
    it["client_order_id"] = np.arange(1, n + 1)
    for k, v in kw.items():
        it[k] = v
    return it


def test_valid_opening_order_is_accepted():
    b = Book()
    d, q = b.check(intent())
    assert d == [R.ACCEPT] and q == [BTC // 10]
    assert b.eng.ev_count[0] == 0


@pytest.mark.parametrize(
    "kw, setup, reason",
    [
        (dict(command=9), None, R.REJ_BAD_COMMAND),
        (dict(side=5), None, R.REJ_BAD_COMMAND),
        (dict(instrument=4), None, R.REJ_BAD_INSTRUMENT),
        (dict(instrument=-1), None, R.REJ_BAD_INSTRUMENT),
        (dict(qty=0), None, R.REJ_BAD_QTY),
        (dict(qty=-5), None, R.REJ_BAD_QTY),
        (dict(price=-1), None, R.REJ_BAD_PRICE),
        (dict(qty=BTC + 1), None, R.REJ_MAX_QTY),
        (dict(), "no_mid", R.REJ_NO_MARKET_DATA),
        (dict(price=MID * 106 // 100, stop_price=MID), None, R.REJ_PRICE_BAND),   # fat finger
        (dict(price=MID * 94 // 100, stop_price=MID // 2), None, R.REJ_PRICE_BAND),
        (dict(qty=BTC), "tight_notional", R.REJ_MAX_NOTIONAL),
        (dict(stop_price=0), None, R.REJ_NO_STOP_LOSS),
        (dict(stop_price=MID + 1), None, R.REJ_BAD_STOP_LOSS),                   # stop above a buy
        (dict(side=SIDE_ASK, stop_price=MID - 1), None, R.REJ_BAD_STOP_LOSS),    # stop below a sell
        (dict(), "daily_loss", R.REJ_DAILY_LOSS),
        (dict(), "drawdown", R.REJ_DRAWDOWN),
        (dict(qty=BTC // 2), None, R.REJ_MAX_POSITION),  # 25k USD > 2 % of 1 M
        (dict(), "correlated", R.REJ_CORRELATION),
        (dict(), "open_orders", R.REJ_MAX_OPEN_ORDERS),
        (dict(), "no_tokens", R.REJ_RATE_LIMIT),
        (dict(), "halted", R.REJ_HALTED),
        (dict(), "reducing", R.REJ_REDUCING),
        (dict(), "disabled", R.REJ_INSTRUMENT_DISABLED),
        (dict(), "gross_slice", R.REJ_GROSS_EXPOSURE),
        (dict(flags=INTENT_FLAG_WANTS_SIZING), None, R.REJ_KELLY_NO_STATS),
        (dict(flags=INTENT_FLAG_WANTS_SIZING, strategy=1), "losing_strategy", R.REJ_KELLY_NO_EDGE),
        (dict(flags=INTENT_FLAG_WANTS_SIZING, strategy=7), None, R.REJ_KELLY_NO_STATS),
    ],
)
def test_every_reject_reason(kw, setup, reason):
    b = Book()
    if setup == "no_mid":
        b.mid[0] = 0
    elif setup == "tight_notional":
        b.rs.inst[0, R.I_MAX_NOTIONAL] = 49_999 * USD
    elif setup == "daily_loss":
        R.update_equity(b.rs.acct, EQUITY - 20_001 * USD, T0 + 1)
    elif setup == "drawdown":
        R.set_limits(b.rs, max_daily_loss=10**6 * USD)
        R.update_equity(b.rs.acct, EQUITY * 84 // 100, T0 + 1)   # 16 % below the peak
    elif setup == "correlated":
        b.pos[2] = BTC // 10
        b.eng.corr[0, 2] = b.eng.corr[2, 0] = 0.71
    elif setup == "open_orders":
        b.oo[0] = 3
    elif setup == "no_tokens":
        b.rs.bucket[0, R.B_TOKENS] = R.TOKEN - 1
    elif setup == "halted":
        b.rs.ks[K_STATE] = TS_HALTED
    elif setup == "reducing":
        b.rs.ks[K_STATE] = TS_REDUCING
    elif setup == "disabled":
        b.rs.inst[0, R.I_ENABLED] = 0
    elif setup == "gross_slice":   # 5k USD committed elsewhere, a 9k slice, 5k more asked
        b.pos[3] = BTC // 10
        R.set_limits(b.rs, max_daily_loss=20_000 * USD, max_gross=9_000 * USD)
    elif setup == "losing_strategy":
        b.rs.strat[1] = [40, 60, 4000 * USD, 6000 * USD]   # p=0.4, b=1: no edge
    d, q = b.check(intent(**kw))
    assert d == [reason], R.REASON_NAMES[d[0]]
    assert q == [0]
    ev = b.eng.ev[: b.eng.ev_count[0]]
    assert len(ev) == 1 and ev[0]["kind"] == EV_RISK_REJECT and ev[0]["reason"] == reason
    assert ev[0]["client_order_id"] == 1 and ev[0]["ts_ns"] == T0


def test_notional_overflow_is_rejected_not_wrapped():
    b = Book()
    big = (1 << 62) + 12345
    b.mid[0] = big
    b.rs.inst[0, R.I_MAX_QTY] = 1 << 40
    b.rs.inst[0, R.I_MAX_NOTIONAL] = R.INT64_MAX
    d, _ = b.check(intent(price=big, qty=4, stop_price=big - 10))
    assert d == [R.REJ_OVERFLOW]
    # just below the int64 edge: the product fits and is judged by the limits instead
    d, _ = b.check(intent(price=big, qty=1, stop_price=big - 10))
    assert d == [R.REJ_MAX_POSITION]


def test_uncorrelated_or_opposite_positions_do_not_cap():
    b = Book()
    b.pos[2] = -(BTC // 10)                      # short a 0.9-correlated instrument: a hedge
    b.eng.corr[0, 2] = b.eng.corr[2, 0] = 0.9
    b.pos[3] = BTC // 10
    b.eng.corr[0, 3] = b.eng.corr[3, 0] = np.nan  # not enough history
    assert b.check(intent())[0] == [R.ACCEPT]
    assert b.check(intent(side=SIDE_ASK, stop_price=MID * 102 // 100))[0] == [R.REJ_CORRELATION]


def test_market_order_is_valued_at_mid_and_needs_a_stop_below_mid():
    b = Book()
    assert b.check(intent(price=0, stop_price=MID - 100))[0] == [R.ACCEPT]
    assert b.check(intent(price=0, stop_price=MID + 100))[0] == [R.REJ_BAD_STOP_LOSS]


def test_reducing_order_needs_no_stop_and_passes_loss_limits():
    b = Book()
    b.pos[0] = BTC // 2
    R.update_equity(b.rs.acct, EQUITY // 2, T0 + 1)   # drawdown and daily loss both breached
    sell = intent(side=SIDE_ASK, stop_price=0, qty=BTC // 2)
    assert b.check(sell)[0] == [R.ACCEPT]
    assert b.check(intent(side=SIDE_ASK, stop_price=0, qty=BTC // 2 + 1))[0] == [R.REJ_NO_STOP_LOSS]
    # a live sell order already covers part of the position: the rest is all that reduces
    b.osl[0] = BTC // 4
    assert b.check(intent(side=SIDE_ASK, stop_price=0, qty=BTC // 4 + 1))[0] == [R.REJ_NO_STOP_LOSS]


def test_reducing_state_only_strictly_reducing_orders():
    b = Book()
    b.rs.ks[K_STATE] = TS_REDUCING
    b.pos[0] = 1000
    d, _ = b.check(intent(4, side=SIDE_ASK, qty=400, stop_price=0, batch_id=[1, 2, 3, 4]))
    # 400 + 400 reduce; the third would flip the position to short: refused
    assert d == [R.ACCEPT, R.ACCEPT, R.REJ_REDUCING, R.REJ_REDUCING]
    assert b.check(intent(side=SIDE_BID))[0] == [R.REJ_REDUCING]     # adds to the long
    c = intent(command=CMD_CANCEL, target_order_id=5)
    assert b.check(c)[0] == [R.ACCEPT]


def test_halted_accepts_only_cancels():
    b = Book()
    b.rs.ks[K_STATE] = TS_HALTED
    b.pos[0] = 1000
    d, _ = b.check(intent(3, command=[CMD_PLACE, CMD_CANCEL, CMD_REPLACE], side=SIDE_ASK,
                          qty=10, stop_price=0, batch_id=[1, 2, 3]))
    assert d == [R.REJ_HALTED, R.ACCEPT, R.REJ_HALTED]


def test_later_intents_see_earlier_accepted_ones():
    b = Book(policy=R.POLICY_INDEPENDENT)
    # 3 open orders allowed; the 4th place in the same call is refused
    d, _ = b.check(intent(4, qty=BTC // 100, batch_id=[1, 2, 3, 4]))
    assert d == [R.ACCEPT] * 3 + [R.REJ_MAX_OPEN_ORDERS]
    # position: 0.3 BTC worst case would be 15k USD < 20k; a 4th 0.1 would be 20k (ok), a 5th 25k
    b = Book(policy=R.POLICY_INDEPENDENT)
    b.rs.inst[0, R.I_MAX_OPEN_ORDERS] = 100
    d, _ = b.check(intent(5, qty=BTC // 10, batch_id=[1, 2, 3, 4, 5]))
    assert d == [R.ACCEPT] * 4 + [R.REJ_MAX_POSITION]
    # rate: venue 0 has 5 tokens; instruments 0 and 2 share it
    b = Book(policy=R.POLICY_INDEPENDENT)
    b.rs.inst[:, R.I_MAX_OPEN_ORDERS] = 100
    d, _ = b.check(intent(7, qty=BTC // 1000, instrument=[0, 2, 0, 2, 0, 2, 1],
                          batch_id=[1, 2, 3, 4, 5, 6, 7]))
    assert d == [R.ACCEPT] * 5 + [R.REJ_RATE_LIMIT, R.ACCEPT]
    # the effects do not outlive the call: the OMS owns accepted orders from now on
    assert not b.rs.work.any()


def test_rate_bucket_refills_with_injected_time():
    b = Book()
    b.rs.inst[:, R.I_MAX_OPEN_ORDERS] = 100
    one = dict(qty=BTC // 1000)
    for k in range(5):
        assert b.check(intent(**one))[0] == [R.ACCEPT]
    assert b.check(intent(**one))[0] == [R.REJ_RATE_LIMIT]
    assert b.check(intent(**one), now=T0 + 199_999_999)[0] == [R.REJ_RATE_LIMIT]   # 0.99 token
    assert b.check(intent(**one), now=T0 + 200_000_000)[0] == [R.ACCEPT]           # 1 token
    assert b.check(intent(**one), now=T0 + 100)[0] == [R.REJ_RATE_LIMIT]  # clock went back: no refill
    # a long pause refills to capacity, not beyond
    d, _ = b.check(intent(7, **one, batch_id=np.arange(1, 8)), now=T0 + 10**15)
    assert d == [R.ACCEPT] * 5 + [R.REJ_RATE_LIMIT] * 2


def test_all_or_none_batch_rolls_back_and_names_the_culprit():
    b = Book()
    it = intent(3, batch_id=7, qty=[BTC // 100, BTC // 100, BTC + 1])
    d, q = b.check(it)
    assert d == [R.REJ_BATCH_PEER, R.REJ_BATCH_PEER, R.REJ_MAX_QTY]
    assert q == [0, 0, 0]
    ev = b.eng.ev[: b.eng.ev_count[0]]
    assert sorted(ev["reason"].tolist()) == [R.REJ_MAX_QTY, R.REJ_BATCH_PEER, R.REJ_BATCH_PEER]
    assert all(ev[ev["reason"] == R.REJ_BATCH_PEER]["aux2"] == 2)  # points at the culprit
    # the rolled-back members returned their rate tokens
    assert b.rs.bucket[0, R.B_TOKENS] == 5 * R.TOKEN
    # a following batch is decided on its own
    d, _ = b.check(intent(2, batch_id=[8, 8], qty=BTC // 100))
    assert d == [R.ACCEPT, R.ACCEPT]


def test_independent_policy_keeps_passing_members():
    b = Book(policy=R.POLICY_INDEPENDENT)
    d, _ = b.check(intent(3, batch_id=7, qty=[BTC // 100, BTC + 1, BTC // 100]))
    assert d == [R.ACCEPT, R.REJ_MAX_QTY, R.ACCEPT]


def test_kelly_sizing():
    b = Book()
    # p = 0.55, avg win = avg loss (b = 1): Kelly f = p - q = 0.10 -> 10 % of 1 M = 100k USD
    b.rs.strat[1] = [55, 45, 55 * 100 * USD, 45 * 100 * USD]
    b.rs.inst[0, R.I_MAX_QTY] = 10 * BTC
    b.rs.inst[0, R.I_MAX_NOTIONAL] = 10**6 * USD
    R.set_limits(b.rs, max_daily_loss=10**5 * USD, max_pos_bps=2000)
    d, q = b.check(intent(qty=0, flags=INTENT_FLAG_WANTS_SIZING, strategy=1))
    assert d == [R.ACCEPT] and q == [2 * BTC]        # 100k USD / 50k USD
    # the intent's qty caps the sized qty
    d, q = b.check(intent(qty=BTC // 2, flags=INTENT_FLAG_WANTS_SIZING, strategy=1))
    assert q == [BTC // 2]
    # a big edge is capped at 25 %: p = 0.9, b = 3 -> f = 0.867 -> 25 % = 250k USD = 5 BTC
    b.rs.strat[1] = [90, 10, 90 * 300 * USD, 10 * 100 * USD]
    R.set_limits(b.rs, max_daily_loss=10**5 * USD, max_pos_bps=10000)
    d, q = b.check(intent(qty=0, flags=INTENT_FLAG_WANTS_SIZING, strategy=1))
    assert d == [R.ACCEPT] and q == [5 * BTC]
    # the sized order still meets every other limit
    b.rs.inst[0, R.I_MAX_QTY] = 4 * BTC
    d, q = b.check(intent(qty=0, flags=INTENT_FLAG_WANTS_SIZING, strategy=1))
    assert d == [R.REJ_MAX_QTY]


def test_quote_scale_factor_for_small_scales():
    rs = R.make_risk(1)
    R.set_instrument(rs, 0, venue=0, price_scale=2, qty_scale=3, max_qty=1, max_notional=1,
                     max_open_orders=1, band_bps=1)
    assert rs.inst[0, R.I_NOTIONAL_MUL] == 1000 and rs.inst[0, R.I_NOTIONAL_DIV] == 1


def test_daily_loss_resets_at_the_utc_day():
    acct = R.make_risk(1).acct
    R.update_equity(acct, 100, T0)
    R.update_equity(acct, 80, T0 + 1)
    assert acct[R.A_DAY_START_EQUITY] == 100 and acct[R.A_PEAK_EQUITY] == 100
    R.update_equity(acct, 70, T0 + R.DAY_NS)
    assert acct[R.A_DAY_START_EQUITY] == 70 and acct[R.A_PEAK_EQUITY] == 100


def test_bad_input_is_refused_clearly():
    b = Book()
    with pytest.raises(TypeError, match="ORDER_INTENT_DTYPE"):
        b.eng.check(np.zeros(1, np.int64), b.pos, b.oo, b.ob, b.osl, b.mid, T0)
    with pytest.raises(ValueError, match="max_batch"):
        b.eng.check(intent(257), b.pos, b.oo, b.ob, b.osl, b.mid, T0)
    with pytest.raises(ValueError, match="instrument 9"):
        R.set_instrument(b.rs, 9, venue=0, price_scale=2, qty_scale=8, max_qty=1,
                         max_notional=1, max_open_orders=1, band_bps=1)
    with pytest.raises(ValueError, match="band_bps"):
        R.set_instrument(b.rs, 0, venue=0, price_scale=2, qty_scale=8, max_qty=1,
                         max_notional=1, max_open_orders=1, band_bps=20000)
    with pytest.raises(ValueError, match="venue 5"):
        R.set_instrument(b.rs, 0, venue=5, price_scale=2, qty_scale=8, max_qty=1,
                         max_notional=1, max_open_orders=1, band_bps=1)
    with pytest.raises(ValueError, match="max_pos_bps"):
        R.set_limits(b.rs, max_daily_loss=1, max_pos_bps=10001)
    with pytest.raises(ValueError, match="policy"):
        R.set_limits(b.rs, max_daily_loss=1, policy=5)
    # the refused calls changed nothing
    assert b.check(intent())[0] == [R.ACCEPT]


def test_kernel_stops_at_journal_capacity_without_losing_rejects():
    b = Book()
    ev = np.zeros(2, b.eng.ev.dtype)
    cnt = np.zeros(1, np.int64)
    it = intent(5, batch_id=[1, 2, 3, 3, 4], qty=BTC + 1)
    dec = np.zeros(5, np.int32)
    q = np.zeros(5, np.int64)
    rs = b.rs
    done = R.check_batch(it, rs.cfg, rs.inst, rs.acct, rs.strat, rs.bucket, rs.work, rs.ks, b.pos,
                         b.oo, b.ob, b.osl, b.mid, b.eng.corr, T0, dec, q, ev, cnt, 0)
    # intents 0 and 1 fit; the batch [2, 3] needs two more slots: stop before it
    assert done == 2 and cnt[0] == 2
    cnt[0] = 0
    done2 = R.check_batch(it[done:], rs.cfg, rs.inst, rs.acct, rs.strat, rs.bucket, rs.work, rs.ks,
                          b.pos, b.oo, b.ob, b.osl, b.mid, b.eng.corr, T0, dec[done:], q[done:],
                          ev, cnt, 0)
    assert done2 == 2 and cnt[0] == 2


def test_check_one_matches_check_and_refuses_bad_input():
    a, b = Book(), Book()
    b.eng.bind(b.pos, b.oo, b.ob, b.osl, b.mid)
    its = intent(6, qty=[BTC // 10, BTC + 1, BTC // 10, BTC // 10, BTC // 10, BTC // 10],
                 stop_price=[MID - 5, MID - 5, 0, MID - 5, MID - 5, MID - 5])
    for k in range(6):
        da, qa = a.check(its[k:k + 1], now=T0 + k)
        assert b.eng.check_one(its[k:k + 1], np.int64(T0 + k)) == (da[0], qa[0])
    # the bound arrays are read live: a position change is seen without re-binding
    b.pos[0] = BTC
    assert b.eng.check_one(its[:1], T0 + 10)[0] == R.REJ_MAX_POSITION
    with pytest.raises(ValueError, match="exactly one"):
        b.eng.check_one(its[:2], T0)
    with pytest.raises(TypeError):
        b.eng.check_one(its[:1], 1.5)
    with pytest.raises(TypeError, match="ORDER_INTENT_DTYPE"):
        b.eng.check_one(np.zeros(1, np.int64), T0)
    with pytest.raises(TypeError, match="open_orders"):
        b.eng.bind(b.pos, b.oo.astype(np.int32), b.ob, b.osl, b.mid)
    with pytest.raises(RuntimeError, match="bind"):
        Book().eng.check_one(its[:1], T0)


def test_risk_reads_the_oms_arrays_in_place():
    """The OMS's [account, instrument] arrays feed risk as row views (bot4d.kernels.oms_state)."""
    from bot4d.kernels.oms_state import make_oms

    oms = make_oms(2, 4, capacity=16)
    b = Book()
    acct = 1
    b.eng.bind(oms.positions.qty[acct], oms.open_orders[acct], oms.open_buy_qty[acct],
               oms.open_sell_qty[acct], b.mid)
    assert b.eng.check_one(intent(), T0) == (R.ACCEPT, BTC // 10)
    oms.open_orders[acct, 0] = 3                     # the OMS now has three live orders
    assert b.eng.check_one(intent(), T0)[0] == R.REJ_MAX_OPEN_ORDERS
    oms.open_orders[acct, 0] = 0
    oms.positions.qty[acct, 0] = BTC // 2            # a fill made us long 0.5 BTC
    assert b.eng.check_one(intent(side=SIDE_ASK, stop_price=0, qty=BTC // 2), T0)[0] == R.ACCEPT
    oms.open_sell_qty[acct, 0] = BTC // 2            # ...but a live sell already covers it
    assert b.eng.check_one(intent(side=SIDE_ASK, stop_price=0, qty=BTC // 2), T0)[0] == R.REJ_NO_STOP_LOSS


def test_note_trade_builds_kelly_statistics_that_size_orders():
    b = Book()
    b.rs.inst[0, R.I_MAX_QTY] = 10 * BTC
    b.rs.inst[0, R.I_MAX_NOTIONAL] = 10**6 * USD
    R.set_limits(b.rs, max_daily_loss=10**5 * USD, max_pos_bps=2000)
    for k in range(100):     # 55 wins of 100 USD, 45 losses of 100 USD: Kelly 10 %
        R.note_trade(b.rs.strat, 1, 100 * USD if k < 55 else -100 * USD)
    R.note_trade(b.rs.strat, 1, 0)        # break-even: neither
    R.note_trade(b.rs.strat, 9, 5)        # unknown strategy: ignored
    assert b.rs.strat[1].tolist() == [55, 45, 5500 * USD, 4500 * USD]
    d, q = b.check(intent(qty=0, flags=INTENT_FLAG_WANTS_SIZING, strategy=1))
    assert d == [R.ACCEPT] and q == [2 * BTC]
    # sums saturate rather than wrap
    R.note_trade(b.rs.strat, 0, R.INT64_MAX)
    R.note_trade(b.rs.strat, 0, R.INT64_MAX)
    R.note_trade(b.rs.strat, 0, -R.INT64_MAX - 1)
    assert b.rs.strat[0].tolist() == [2, 1, R.INT64_MAX, R.INT64_MAX]


# --- account-wide gross exposure: the caller's slice of the account's limit --------------------------
def test_gross_exposure_slice_counts_positions_live_orders_and_this_call():
    """Committed exposure: each instrument's worst-case |position| whichever side fills, at the mid.
    A shard with a 12k USD slice and a 5k USD long: one more 5k buy fits, the next (on another
    instrument) does not, as it sees the first; a sell whose worst case stays below the long side
    adds nothing; a short on another instrument counts; from flat a 10k short fits."""
    b = Book()
    R.set_limits(b.rs, max_daily_loss=20_000 * USD, max_gross=12_000 * USD)
    b.pos[0] = BTC // 10                    # 5k long
    assert R.committed_exposure(b.pos, b.ob, b.osl, b.mid, b.rs.inst, b.rs.work) == 5_000 * USD
    b.osl[0] = BTC // 10                    # a live sell of it: reduces, commits nothing more
    assert R.committed_exposure(b.pos, b.ob, b.osl, b.mid, b.rs.inst, b.rs.work) == 5_000 * USD
    d, _ = b.check(intent(2, instrument=[0, 1], client_order_id=[1, 2]))
    assert d == [R.ACCEPT, R.REJ_GROSS_EXPOSURE]      # 10k, then 15k > 12k
    ev = b.eng.ev[: b.eng.ev_count[0]]
    assert ev[0]["aux2"] == 15_000 * USD              # what the account would have committed
    b.ob[0] = BTC // 10                     # (the accepted buy is live now)
    # 0.1 more to sell could leave 0.1 short, less than the 0.2 long if the buy fills: 10k stays
    d, _ = b.check(intent(side=SIDE_ASK, stop_price=MID * 102 // 100, qty=BTC // 10))
    assert d == [R.ACCEPT]
    d, _ = b.check(intent(side=SIDE_ASK, stop_price=MID * 102 // 100, qty=BTC * 3 // 10, instrument=2))
    assert d == [R.REJ_GROSS_EXPOSURE]                # 10k + 15k short on another instrument
    b.pos[0] = 0
    b.ob[0] = b.osl[0] = 0
    d, _ = b.check(intent(side=SIDE_ASK, stop_price=MID * 102 // 100, qty=BTC * 2 // 10, instrument=2))
    assert d == [R.ACCEPT]                            # 10k short from flat fits 12k


def test_gross_exposure_reducing_orders_pass_an_exceeded_slice():
    b = Book()
    R.set_limits(b.rs, max_daily_loss=20_000 * USD, max_gross=1_000 * USD)
    b.pos[1] = BTC // 10                    # 5k long against a 1k slice (the limit was lowered)
    d, _ = b.check(intent(side=SIDE_ASK, instrument=1, stop_price=0, qty=BTC // 20))
    assert d == [R.ACCEPT]
    d, _ = b.check(intent(instrument=2))
    assert d == [R.REJ_GROSS_EXPOSURE]


def test_gross_exposure_of_a_refused_batch_is_given_back():
    """All-or-none: the members accepted before the culprit are undone, and so is their exposure."""
    b = Book()
    R.set_limits(b.rs, max_daily_loss=20_000 * USD, max_gross=5_000 * USD)
    it = intent(3, instrument=[0, 1, 2], batch_id=[7, 7, 0], client_order_id=[1, 2, 3])
    it["stop_price"][1] = 0                 # the second member has no stop: the batch fails
    d, _ = b.check(it)
    # the first member's 5k was committed, then given back: the third's 5k fits the 5k slice
    assert d == [R.REJ_BATCH_PEER, R.REJ_NO_STOP_LOSS, R.ACCEPT]


def test_no_gross_limit_by_default_and_set_limits_refuses_a_negative_slice():
    b = Book()
    assert b.rs.cfg[R.C_MAX_GROSS] == R.INT64_MAX
    b.pos[:] = BTC // 10 * 3                # 60k committed, far beyond any slice we might have set
    d, _ = b.check(intent(instrument=1))    # opens 5k more (20k on the instrument: within 2 %)
    assert d == [R.ACCEPT]
    with pytest.raises(ValueError, match="max_gross"):
        R.set_limits(b.rs, max_daily_loss=1, max_gross=-1)


def test_gross_exposure_saturates_instead_of_wrapping():
    b = Book()
    R.set_limits(b.rs, max_daily_loss=20_000 * USD, max_gross=R.INT64_MAX - 1)
    b.pos[3] = 1 << 61                      # its notional does not fit int64
    assert R.committed_exposure(b.pos, b.ob, b.osl, b.mid, b.rs.inst, b.rs.work) == R.INT64_MAX
    d, _ = b.check(intent())
    assert d == [R.REJ_GROSS_EXPOSURE]
