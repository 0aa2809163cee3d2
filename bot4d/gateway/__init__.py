"""Order gateways: what the daemon's io thread uses to send shard commands to venues.

* ``bot4d.gateway.rest``: keep-alive HTTP/1.1 client pool on asyncio streams (and the one
  chunked-body reader the project shares).
* ``bot4d.gateway.binance``: the Binance spot order gateway (signed REST order entry, the
  user-data stream as the source of order events, reconciliation, weight budget, breaker).

Nothing is imported here so that ``bot4d.feed.http`` can use the chunked reader without pulling
in the gateway.
"""
