"""Market-data feed client: WebSocket connections (picows), reconnect policy, stale detection,
REST snapshots and the per-instrument book-state table that every consumer reads.

Venue protocol knowledge stays in ``bot4d.venues``; this package reaches it only through the
adapter interface in ``bot4d.feed.adapter``.
"""
