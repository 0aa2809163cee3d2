-- bot4d core schema: instruments, the journal's destination tables, and the per-shard cursor.
--
-- Journal events carry int64 units. Every row keeps those units in BIGINT columns together with
-- the instrument's scale, and the NUMERIC value is a STORED generated column computed exactly
-- (an exact division by a power of ten, see bot4d_num). The sidecar can then send
-- fixed-width binary rows built with numpy, and no float ever touches a value.
--
-- Time-series tables carry a TIMESERIES marker comment: the migrator turns the marker into
-- PARTITION BY RANGE (ts) (native partitioning by day) or, when TimescaleDB is installed, into a
-- hypertable with one-day chunks. bot4d_meta.storage_mode says which one is active.

CREATE TABLE bot4d_meta (
    key   text PRIMARY KEY,
    value text NOT NULL
);

-- units -> NUMERIC, exactly. Not units * 10^-scale: power() with a negative exponent keeps only
-- ~16 decimals (10^-18 came out as 0). Giving the dividend `scale` decimals first makes the
-- division compute at least that many, and the exact quotient never has more; the outer round
-- only fixes the displayed scale. tests/test_persist_schema.py checks it against Decimal.
CREATE FUNCTION bot4d_num(units bigint, scale smallint) RETURNS numeric
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN round(round(units::numeric, scale::int) / power(10::numeric, scale::int), scale::int);

CREATE TABLE instruments (
    id            integer PRIMARY KEY CHECK (id >= 0),
    venue         text NOT NULL,
    symbol        text NOT NULL,
    price_scale   smallint NOT NULL CHECK (price_scale BETWEEN 0 AND 18),
    qty_scale     smallint NOT NULL CHECK (qty_scale BETWEEN 0 AND 18),
    quote_scale   smallint NOT NULL CHECK (quote_scale BETWEEN 0 AND 18), -- fees, P&L
    position_cap  numeric CHECK (position_cap IS NULL OR position_cap > 0),  -- |position| limit
    UNIQUE (venue, symbol)
);

CREATE TABLE assets (
    id     integer PRIMARY KEY CHECK (id >= 0),
    code   text NOT NULL UNIQUE,
    scale  smallint NOT NULL CHECK (scale BETWEEN 0 AND 18)
);

-- The last journal sequence persisted per shard, committed in the same transaction as its rows.
CREATE TABLE journal_cursor (
    shard       smallint PRIMARY KEY CHECK (shard >= 0),
    last_seq    bigint NOT NULL CHECK (last_seq >= 0),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- One row per order, from EV_ORDER_NEW. Its later life is in order_events.
CREATE TABLE orders (
    shard            smallint NOT NULL,
    seq              bigint NOT NULL,
    ts               timestamptz NOT NULL,
    instrument       integer NOT NULL REFERENCES instruments (id),
    order_id         bigint NOT NULL,
    client_order_id  bigint NOT NULL,
    side             smallint NOT NULL CHECK (side IN (0, 1)),
    order_type       smallint NOT NULL,
    tif              smallint NOT NULL,
    state            smallint NOT NULL,
    opens_position   boolean NOT NULL,
    flags            bigint NOT NULL,
    oco_group        bigint NOT NULL,
    price_units      bigint NOT NULL CHECK (price_units >= 0),
    qty_units        bigint NOT NULL CHECK (qty_units > 0),
    stop_units       bigint NOT NULL CHECK (stop_units >= 0),
    take_profit_units bigint NOT NULL CHECK (take_profit_units >= 0),
    price_scale      smallint NOT NULL,
    qty_scale        smallint NOT NULL,
    price            numeric GENERATED ALWAYS AS (bot4d_num(price_units, price_scale)) STORED,
    qty              numeric GENERATED ALWAYS AS (bot4d_num(qty_units, qty_scale)) STORED,
    stop_price       numeric GENERATED ALWAYS AS (CASE WHEN stop_units > 0 THEN bot4d_num(stop_units, price_scale) END) STORED,
    take_profit_price numeric GENERATED ALWAYS AS (CASE WHEN take_profit_units > 0 THEN bot4d_num(take_profit_units, price_scale) END) STORED,
    PRIMARY KEY (shard, order_id),
    UNIQUE (shard, seq),
    -- the rule "no position without a stop-loss", held by the database too
    CONSTRAINT opening_order_has_stop_loss CHECK (NOT opens_position OR stop_units > 0)
);

CREATE TABLE order_events (
    shard            smallint NOT NULL,
    seq              bigint NOT NULL,
    ts               timestamptz NOT NULL,
    instrument       integer NOT NULL,
    order_id         bigint NOT NULL,
    client_order_id  bigint NOT NULL,
    state            smallint NOT NULL,
    reason           integer NOT NULL,
    venue_order_id   bigint NOT NULL,
    price_units      bigint NOT NULL CHECK (price_units >= 0),
    qty_units        bigint NOT NULL CHECK (qty_units >= 0),
    filled_units     bigint NOT NULL CHECK (filled_units >= 0),
    price_scale      smallint NOT NULL,
    qty_scale        smallint NOT NULL,
    price            numeric GENERATED ALWAYS AS (bot4d_num(price_units, price_scale)) STORED,
    qty              numeric GENERATED ALWAYS AS (bot4d_num(qty_units, qty_scale)) STORED,
    filled_qty       numeric GENERATED ALWAYS AS (bot4d_num(filled_units, qty_scale)) STORED,
    PRIMARY KEY (shard, seq, ts)
) /*@TIMESERIES ts*/;

CREATE TABLE fills (
    shard            smallint NOT NULL,
    seq              bigint NOT NULL,
    ts               timestamptz NOT NULL,
    instrument       integer NOT NULL,
    order_id         bigint NOT NULL,
    client_order_id  bigint NOT NULL,
    side             smallint NOT NULL CHECK (side IN (0, 1)),
    liquidity        smallint NOT NULL CHECK (liquidity IN (0, 1, 2)),  -- 0 unknown, 1 maker, 2 taker
    trade_id         bigint NOT NULL,
    price_units      bigint NOT NULL CHECK (price_units > 0),
    qty_units        bigint NOT NULL CHECK (qty_units > 0),
    fee_units        bigint NOT NULL,                                   -- negative: rebate
    price_scale      smallint NOT NULL,
    qty_scale        smallint NOT NULL,
    quote_scale      smallint NOT NULL,
    price            numeric GENERATED ALWAYS AS (bot4d_num(price_units, price_scale)) STORED,
    qty              numeric GENERATED ALWAYS AS (bot4d_num(qty_units, qty_scale)) STORED,
    fee              numeric GENERATED ALWAYS AS (bot4d_num(fee_units, quote_scale)) STORED,
    PRIMARY KEY (shard, seq, ts)
) /*@TIMESERIES ts*/;

-- Position history: one row per EV_POSITION; positions_latest is the current state.
CREATE TABLE positions (
    shard            smallint NOT NULL,
    seq              bigint NOT NULL,
    ts               timestamptz NOT NULL,
    instrument       integer NOT NULL REFERENCES instruments (id),
    qty_units        bigint NOT NULL,                    -- signed: negative is short
    avg_price_units  bigint NOT NULL CHECK (avg_price_units >= 0),
    realized_units   bigint NOT NULL,
    fees_units       bigint NOT NULL,
    price_scale      smallint NOT NULL,
    qty_scale        smallint NOT NULL,
    quote_scale      smallint NOT NULL,
    qty              numeric GENERATED ALWAYS AS (bot4d_num(qty_units, qty_scale)) STORED,
    avg_price        numeric GENERATED ALWAYS AS (bot4d_num(avg_price_units, price_scale)) STORED,
    realized_pnl     numeric GENERATED ALWAYS AS (bot4d_num(realized_units, quote_scale)) STORED,
    fees             numeric GENERATED ALWAYS AS (bot4d_num(fees_units, quote_scale)) STORED,
    PRIMARY KEY (shard, seq)
);

-- The instrument's position cap, where configured, holds at the database too.
CREATE FUNCTION bot4d_check_position_cap() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    cap numeric;
BEGIN
    SELECT position_cap INTO cap FROM instruments WHERE id = NEW.instrument;
    IF cap IS NOT NULL AND abs(NEW.qty) > cap THEN
        RAISE EXCEPTION 'position % on instrument % exceeds its cap %', NEW.qty, NEW.instrument, cap
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER positions_cap AFTER INSERT ON positions
    FOR EACH ROW EXECUTE FUNCTION bot4d_check_position_cap();

CREATE TABLE balances (
    shard            smallint NOT NULL,
    seq              bigint NOT NULL,
    ts               timestamptz NOT NULL,
    asset            integer NOT NULL REFERENCES assets (id),
    total_units      bigint NOT NULL,
    locked_units     bigint NOT NULL CHECK (locked_units >= 0),
    scale            smallint NOT NULL,
    total            numeric GENERATED ALWAYS AS (bot4d_num(total_units, scale)) STORED,
    locked           numeric GENERATED ALWAYS AS (bot4d_num(locked_units, scale)) STORED,
    PRIMARY KEY (shard, seq)
);

-- Rejects, kill-switch trips, breaker transitions, trading-state changes.
CREATE TABLE risk_events (
    shard            smallint NOT NULL,
    seq              bigint NOT NULL,
    ts               timestamptz NOT NULL,
    kind             smallint NOT NULL CHECK (kind IN (4, 5, 6, 10)),
    instrument       integer,                            -- NULL: not about one instrument
    order_id         bigint NOT NULL,
    client_order_id  bigint NOT NULL,
    side             smallint NOT NULL,
    state            smallint NOT NULL,
    reason           integer NOT NULL,
    price_units      bigint NOT NULL,
    qty_units        bigint NOT NULL,
    aux0             bigint NOT NULL,
    aux1             bigint NOT NULL,
    price_scale      smallint,
    qty_scale        smallint,
    price            numeric GENERATED ALWAYS AS (bot4d_num(price_units, price_scale)) STORED,
    qty              numeric GENERATED ALWAYS AS (bot4d_num(qty_units, qty_scale)) STORED,
    PRIMARY KEY (shard, seq)
);

-- Every mutating bot4ctl command, with the caller's uid and pid (SO_PEERCRED).
CREATE TABLE control_audit (
    shard            smallint NOT NULL,
    seq              bigint NOT NULL,
    ts               timestamptz NOT NULL,
    command          integer NOT NULL,
    uid              bigint NOT NULL CHECK (uid >= 0),
    pid              bigint NOT NULL CHECK (pid > 0),
    instrument       integer,
    order_id         bigint NOT NULL,
    arg0             bigint NOT NULL,
    arg1             bigint NOT NULL,
    PRIMARY KEY (shard, seq)
);

-- Optional market-data tops (not fed by the journal yet: the daemon publishes tops to shared
-- memory; a recorder may COPY them here).
CREATE TABLE md_tops (
    ts               timestamptz NOT NULL,
    instrument       integer NOT NULL,
    bid_units        bigint NOT NULL,
    bid_qty_units    bigint NOT NULL,
    ask_units        bigint NOT NULL,
    ask_qty_units    bigint NOT NULL,
    price_scale      smallint NOT NULL,
    qty_scale        smallint NOT NULL,
    bid              numeric GENERATED ALWAYS AS (bot4d_num(bid_units, price_scale)) STORED,
    ask              numeric GENERATED ALWAYS AS (bot4d_num(ask_units, price_scale)) STORED
) /*@TIMESERIES ts*/;

-- Every journaled event lands in exactly one of these tables: this view is the audit of that.
CREATE VIEW journal_rows AS
          SELECT shard, seq, 'orders'::text AS tbl FROM orders
    UNION ALL SELECT shard, seq, 'order_events' FROM order_events
    UNION ALL SELECT shard, seq, 'fills' FROM fills
    UNION ALL SELECT shard, seq, 'positions' FROM positions
    UNION ALL SELECT shard, seq, 'balances' FROM balances
    UNION ALL SELECT shard, seq, 'risk_events' FROM risk_events
    UNION ALL SELECT shard, seq, 'control_audit' FROM control_audit;

CREATE VIEW positions_latest AS
    SELECT DISTINCT ON (shard, instrument) * FROM positions ORDER BY shard, instrument, seq DESC;

CREATE VIEW orders_latest AS
    SELECT o.shard, o.order_id, o.instrument, o.client_order_id, o.price, o.qty,
           coalesce(e.state, o.state) AS state, coalesce(e.filled_qty, 0) AS filled_qty,
           coalesce(e.ts, o.ts) AS updated_at
      FROM orders o
      LEFT JOIN LATERAL (SELECT state, filled_qty, ts FROM order_events e
                          WHERE e.shard = o.shard AND e.order_id = o.order_id
                          ORDER BY seq DESC LIMIT 1) e ON true;
CREATE INDEX order_events_order ON order_events (shard, order_id, seq);

-- Native mode: the day partitions of every partitioned table, created on demand by the writer in
-- the same transaction as the rows that need them (UTC days). A no-op under TimescaleDB.
CREATE FUNCTION bot4d_ensure_day(day date) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    t text;
    part text;
BEGIN
    FOR t IN SELECT c.relname FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partrelid
              JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = current_schema() LOOP
        part := t || '_' || to_char(day, 'YYYYMMDD');
        IF to_regclass(quote_ident(part)) IS NULL THEN
            EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                           part, t, day::timestamp AT TIME ZONE 'UTC',
                           (day + 1)::timestamp AT TIME ZONE 'UTC');
        END IF;
    END LOOP;
END $$;
