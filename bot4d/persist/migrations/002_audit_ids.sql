-- What an auditor joins our records to the venue's on (issue 13): the venue's order id, the
-- venue's client order id string, the venue trade id, and the boot (the daemon run) of each order.
--
-- Until now order_events.venue_order_id held the kernel's aux0, which was the order's previous
-- state (or a refused target, or a report kind), never a venue id: the column is kept under the
-- name aux0_v1 with the raw value, and the rows written before this migration get the state
-- transition decoded from it where the old kernel's meaning is certain (see the UPDATE below).
--
-- boot is the daemon run's boot id as an integer, int(boot, 36) of its six base-36 characters
-- (bot4d.persist.decode.boot_int); NULL where it is not known (rows written before this
-- migration, or a journal ring that did not name its boot). The client order id string the venue
-- knows, b4<boot>-<shard>-<order_id> (bot4d.gateway.binance.client_order_id), is a stored
-- generated column: the sidecar keeps sending fixed-width rows only (bot4d/persist/copybin.py).

-- six base-36 digits, zero-padded: the inverse of int(boot, 36) for the daemon's boot ids
CREATE FUNCTION bot4d_boot_text(b bigint) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN substr('0123456789abcdefghijklmnopqrstuvwxyz', (b / 60466176 % 36)::integer + 1, 1)
    || substr('0123456789abcdefghijklmnopqrstuvwxyz', (b / 1679616 % 36)::integer + 1, 1)
    || substr('0123456789abcdefghijklmnopqrstuvwxyz', (b / 46656 % 36)::integer + 1, 1)
    || substr('0123456789abcdefghijklmnopqrstuvwxyz', (b / 1296 % 36)::integer + 1, 1)
    || substr('0123456789abcdefghijklmnopqrstuvwxyz', (b / 36 % 36)::integer + 1, 1)
    || substr('0123456789abcdefghijklmnopqrstuvwxyz', (b % 36)::integer + 1, 1);

-- the venue's client order id of our order (shard, order_id) placed by run ``boot``; NULL when
-- the boot is unknown or the record names no order
CREATE FUNCTION bot4d_venue_client_order_id(boot bigint, shard smallint, order_id bigint) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN boot IS NULL OR order_id <= 0 THEN NULL
            ELSE 'b4' || bot4d_boot_text(boot) || '-' || shard::text || '-' || order_id::text END;

-- orders: the run that placed it; the venue's order id is set by the writer when the first order
-- event naming it is persisted (NULL until the venue named one, e.g. an order refused locally)
ALTER TABLE orders
    ADD COLUMN boot bigint CHECK (boot >= 0 AND boot < 2176782336),
    ADD COLUMN venue_order_id bigint CHECK (venue_order_id > 0);
ALTER TABLE orders
    ADD COLUMN venue_client_order_id text
        GENERATED ALWAYS AS (bot4d_venue_client_order_id(boot, shard, order_id)) STORED;

-- order_events: the transition in columns of its own (from_state -> to_state; to_state differs
-- from state only for a refused transition, reason 1), the venue's order id (NULL: not known
-- yet), the detail (the venue's error code of a reject / cancel-reject / expiry, the trigger mark
-- price of a triggered stop) and the cause of a refusal (the venue report kind, RP_*, or the
-- command, CMD_*, that was refused; 0 none).
ALTER TABLE order_events RENAME COLUMN venue_order_id TO aux0_v1;
ALTER TABLE order_events ALTER COLUMN aux0_v1 DROP NOT NULL;
ALTER TABLE order_events
    ADD COLUMN venue_order_id bigint CHECK (venue_order_id > 0),
    ADD COLUMN from_state smallint,
    ADD COLUMN to_state smallint,
    ADD COLUMN detail bigint,
    ADD COLUMN cause smallint,
    ADD COLUMN boot bigint CHECK (boot >= 0 AND boot < 2176782336);
ALTER TABLE order_events
    ADD COLUMN venue_client_order_id text
        GENERATED ALWAYS AS (bot4d_venue_client_order_id(boot, shard, order_id)) STORED;
COMMENT ON COLUMN order_events.aux0_v1 IS
    'rows before migration 002 only: the raw aux0 (previous state; refused target for reason 1; report kind for reasons 2, 3, 9, 13)';

-- Rows written before this migration: the old kernel put the state before in aux0 for every
-- transition, the refused target for R_ILLEGAL (1), and the report kind for refused reports
-- (R_UNKNOWN_ORDER 2, R_OVERFILL 3, R_OVERFLOW 9, R_BAD_INPUT 13: no transition there).
UPDATE order_events SET
    from_state = CASE WHEN reason = 1 THEN state
                      WHEN reason IN (2, 3, 9, 13) THEN NULL
                      ELSE aux0_v1::smallint END,
    to_state = CASE WHEN reason = 1 THEN aux0_v1::smallint
                    WHEN reason IN (2, 3, 9, 13) THEN NULL
                    ELSE state END
 WHERE aux0_v1 BETWEEN 0 AND 9;

-- fills: the venue's order id (NULL: unknown), whether reconciliation found it rather than the
-- venue's stream (journal aux3 bit 0), and the run whose order it filled (an earlier run's order
-- for a fill recovered after a restart)
ALTER TABLE fills
    ADD COLUMN venue_order_id bigint CHECK (venue_order_id > 0),
    ADD COLUMN recovered boolean NOT NULL DEFAULT false,
    ADD COLUMN boot bigint CHECK (boot >= 0 AND boot < 2176782336);
ALTER TABLE fills
    ADD COLUMN venue_client_order_id text
        GENERATED ALWAYS AS (bot4d_venue_client_order_id(boot, shard, order_id)) STORED;
-- the venue numbers trades increasingly per symbol, so a BRIN range index on trade_id finds a
-- venue trade at next to no cost for the writer
CREATE INDEX fills_trade_id ON fills USING brin (instrument, trade_id);

-- order ids restart with every run: an order is (shard, boot, order_id); order events of another
-- run with the same order id are not its events
CREATE OR REPLACE VIEW orders_latest AS
    SELECT o.shard, o.order_id, o.instrument, o.client_order_id, o.price, o.qty,
           coalesce(e.state, o.state) AS state, coalesce(e.filled_qty, 0) AS filled_qty,
           coalesce(e.ts, o.ts) AS updated_at, o.boot, o.venue_order_id, o.venue_client_order_id
      FROM orders o
      LEFT JOIN LATERAL (SELECT state, filled_qty, ts FROM order_events e
                          WHERE e.shard = o.shard AND e.order_id = o.order_id
                            AND e.boot IS NOT DISTINCT FROM o.boot
                          ORDER BY seq DESC LIMIT 1) e ON true;
