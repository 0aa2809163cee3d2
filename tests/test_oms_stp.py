"""The OMS's local self-trade check applies each instrument's own policy (``stp_mode[account,
instrument]``), the one ``[[instruments]] stp`` configures and the venue is asked for, not one
policy per account."""
from __future__ import annotations

from bot4d.kernels import oms, stp
from bot4d.kernels.oms_state import S_ACKED, S_CANCEL_PENDING, S_SUBMITTED
from bot4d.records import SIDE_ASK, SIDE_BID
from tests.test_oms_support import Driver, intent, report


def _resting_sell(d: Driver, coid: int, inst: int) -> int:
    oid = d.place(coid, side=SIDE_ASK, px=100, qty=5, inst=inst)
    d.apply(report(oms.RP_ACK, oid, inst=inst))
    return oid


def test_each_instrument_keeps_its_own_stp_policy():
    """Instrument 0 cancel-new, instrument 1 cancel-resting, on one account: the same crossing buy
    is refused on 0 (its resting sell stays) and goes out on 1 (its resting sell is cancelled)."""
    d = Driver(n_instruments=2)
    d.st.stp_mode[0, 0] = stp.STP_CANCEL_NEW
    d.st.stp_mode[0, 1] = stp.STP_CANCEL_RESTING
    r0, r1 = _resting_sell(d, 1, 0), _resting_sell(d, 2, 1)

    d.submit(intent(3, side=SIDE_BID, px=100, qty=2, inst=0))
    assert d.order_id_of(3) == 0 and d.events[-1]["reason"] == oms.R_STP
    assert d.state(r0) == S_ACKED

    d.submit(intent(4, side=SIDE_BID, px=100, qty=2, inst=1))
    new = d.order_id_of(4)
    assert new != 0 and d.state(new) == S_SUBMITTED
    assert d.state(r1) == S_CANCEL_PENDING
    # the order carries the policy it was checked with
    assert d.st.o_stp[d.slot(new)] == stp.STP_CANCEL_RESTING


def test_none_on_one_instrument_leaves_the_other_checked():
    d = Driver(n_instruments=2)
    d.st.stp_mode[0, 1] = stp.STP_NONE          # instrument 0 keeps the default, cancel-new
    r0, r1 = _resting_sell(d, 1, 0), _resting_sell(d, 2, 1)
    d.submit(intent(3, side=SIDE_BID, px=101, qty=1, inst=1))
    assert d.state(d.order_id_of(3)) == S_SUBMITTED and d.state(r1) == S_ACKED
    d.submit(intent(4, side=SIDE_BID, px=101, qty=1, inst=0))
    assert d.order_id_of(4) == 0 and d.state(r0) == S_ACKED


def test_default_policy_is_cancel_new_everywhere():
    d = Driver(n_accounts=2, n_instruments=3)
    assert d.st.stp_mode.shape == (2, 3) and (d.st.stp_mode == stp.STP_CANCEL_NEW).all()
