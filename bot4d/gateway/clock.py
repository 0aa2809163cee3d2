"""The venue's clock as seen from here: offset measured against ``GET /api/v3/time``, and its drift.

Binance refuses a signed request whose ``timestamp`` is 1 s or more ahead of its clock, or more
than ``recvWindow`` behind it (-1021, rest-api.md "Timing security"). Signing with the local clock
works only while the two clocks agree; so the gateway signs with local time + the measured offset.

A measurement takes the local clock before (t0) and after (t1) the request and the server's
``serverTime`` (ms): the server read its clock somewhere inside [t0, t1], so the offset is
``serverTime - (t0 + t1) / 2`` with an error of at most half the round trip plus the server's
millisecond rounding. Drift is the change of the offset per second of local time between two
measurements (ns per s: 1000 = 1 ppm); it says how fast a fresh offset goes stale.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class VenueClock:
    offset_ns: int = 0          # venue clock - local clock
    rtt_ns: int = 0             # round trip of the last measurement
    measured_ns: int = 0        # local time of the last measurement (0: never)
    drift_ns_per_s: int = 0     # offset change per second of local time, last two measurements
    measurements: int = 0
    invalid_timestamp: int = 0  # -1021 answers (each one re-measured)

    def observe(self, t0_ns: int, server_ms: int, t1_ns: int) -> int:
        """Take one measurement; returns the new offset (ns)."""
        if t1_ns < t0_ns:
            raise ValueError("the local clock went backwards during the measurement")
        mid = (t0_ns + t1_ns) // 2
        offset = int(server_ms) * 1_000_000 - mid
        if self.measured_ns and mid > self.measured_ns:
            self.drift_ns_per_s = (offset - self.offset_ns) * 1_000_000_000 // (mid - self.measured_ns)
        self.offset_ns = offset
        self.rtt_ns = t1_ns - t0_ns
        self.measured_ns = mid
        self.measurements += 1
        return offset

    def venue_ns(self, local_ns: int) -> int:
        """The venue's time at local time ``local_ns``."""
        return local_ns + self.offset_ns

    def status(self, now_ns: int) -> dict:
        return {"offset_ms": round(self.offset_ns / 1e6, 3), "rtt_ms": round(self.rtt_ns / 1e6, 3),
                "drift_ppm": round(self.drift_ns_per_s / 1e3, 3), "measurements": self.measurements,
                "age_s": round((now_ns - self.measured_ns) / 1e9, 1) if self.measured_ns else None,
                "invalid_timestamp_answers": self.invalid_timestamp}
