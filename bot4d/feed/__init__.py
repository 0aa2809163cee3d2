"""Market-data feed client: WebSocket connections (picows), reconnect policy, stale detection,
REST snapshots and the per-instrument book-state table that every consumer reads.

Venue protocol knowledge stays in ``bot4d.venues``; this package reaches it only through the
adapter interface in ``bot4d.feed.adapter``.

* ``adapter``  the FeedAdapter protocol (what a venue must tell the client)
* ``client``   FeedConnection: one self-healing WebSocket connection
* ``manager``  FeedClient: all connections, one state table, per-venue counters
* ``state``    BookStateTable (SYNCING / LIVE / STALE / RESYNCING per instrument)
* ``backoff``  reconnect delays: exponential, full jitter, attempts capped per window
* ``counters`` connection-level counters and once-per-burst logging
* ``http``     the small HTTP/1.1 client for REST depth snapshots
* ``binance``, ``kraken``, ``okx``, ``bybit``, ``coinbase``  the adapters around the venue modules
* ``refbook``  a plain-Python book from records (test reference) and the record Tap

Contract towards consumers: only LIVE is usable. When a book loses its chain the client also
sends MD_CLEAR for it to the ingress, so a shard never holds levels nobody vouches for.
"""
