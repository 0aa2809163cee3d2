-- bot4d core schema: instruments, the journal's destination tables, and the per-shard cursor.
--
-- Journal events carry int64 units; money and quantities are stored as NUMERIC. The sidecar
-- converts units -> NUMERIC exactly on the client, in numpy, into PostgreSQL's binary NUMERIC
-- format with a fixed number of base-10000 digits (bot4d/persist/copybin.py), so every row it
-- sends is fixed-width and no float ever touches a value. A zero price where a price is optional
-- (stop_price, take_profit_price) means "none": fixed-width rows carry no NULLs.
--
-- Time-series tables carry a TIMESERIES marker comment: the migrator turns the marker into
-- PARTITION BY RANGE (ts) (native partitioning by day) or, when TimescaleDB is installed, into a
-- hypertable with one-day chunks. bot4d_meta.storage_mode says which one is active.

CREATE TABLE bot4d_meta (
    key   text PRIMARY KEY,
    value text NOT NULL
);

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
-- Sequences start at 0, so -1 means "nothing yet". A shard's sequence keeps growing across
-- daemon restarts although every new journal ring counts from 0 again: the rows' seq is
-- seq_base + the ring's own sequence, where journal_id (the ring segment's creation time, ns)
-- names the ring that seq_base belongs to.
CREATE TABLE journal_cursor (
    shard       smallint PRIMARY KEY CHECK (shard >= 0),
    last_seq    bigint NOT NULL CHECK (last_seq >= -1),
    journal_id  bigint NOT NULL,
    seq_base    bigint NOT NULL CHECK (seq_base >= 0 AND seq_base <= last_seq + 1),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- One row per order, from EV_ORDER_NEW. Its later life is in order_events.
CREATE TABLE orders (
    shard            smallint NOT NULL,
    seq              bigint NOT NULL,
    ts               timestamptz NOT NULL,
    instrument       integer NOT NULL,
    order_id         bigint NOT NULL,
    client_order_id  bigint NOT NULL,
    side             smallint NOT NULL CHECK (side IN (0, 1)),
    order_type       smallint NOT NULL,
    tif              smallint NOT NULL,
    state            smallint NOT NULL,
    opens_position   boolean NOT NULL,
    flags            bigint NOT NULL,
    oco_group        bigint NOT NULL,
    price            numeric NOT NULL CHECK (price >= 0),          -- 0: market order
    qty              numeric NOT NULL CHECK (qty > 0),
    stop_price       numeric NOT NULL CHECK (stop_price >= 0),     -- 0: none
    take_profit_price numeric NOT NULL CHECK (take_profit_price >= 0),
    PRIMARY KEY (shard, seq),
    -- the rule "no position without a stop-loss", held by the database too
    CONSTRAINT opening_order_has_stop_loss CHECK (NOT opens_position OR stop_price > 0)
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
    price            numeric NOT NULL CHECK (price >= 0),
    qty              numeric NOT NULL CHECK (qty >= 0),
    filled_qty       numeric NOT NULL CHECK (filled_qty >= 0)
) /*@TIMESERIES ts*/;
-- No primary key on the two high-volume tables: a (shard, seq, ts) btree cost 0.75 µs of the
-- ~2 µs PostgreSQL spends per row. A duplicate cannot arise: rows of a shard are only written in
-- the transaction that moves journal_cursor past them, under that cursor row's lock, and only
-- for sequences above it. BRIN keeps lookups by sequence cheap (and costs next to nothing).
CREATE INDEX order_events_seq ON order_events USING brin (shard, seq);

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
    price            numeric NOT NULL CHECK (price > 0),
    qty              numeric NOT NULL CHECK (qty > 0),
    fee              numeric NOT NULL                                   -- negative: rebate
) /*@TIMESERIES ts*/;
CREATE INDEX fills_seq ON fills USING brin (shard, seq);

-- Position history: one row per EV_POSITION; positions_latest is the current state.
CREATE TABLE positions (
    shard            smallint NOT NULL,
    seq              bigint NOT NULL,
    ts               timestamptz NOT NULL,
    instrument       integer NOT NULL,
    qty              numeric NOT NULL,                   -- signed: negative is short
    avg_price        numeric NOT NULL CHECK (avg_price >= 0),
    realized_pnl     numeric NOT NULL,
    fees             numeric NOT NULL,
    PRIMARY KEY (shard, seq)
);

-- The instrument's position cap, where configured, holds at the database too. One check per
-- statement over the COPY's transition table: a per-row trigger cost 4x the insert rate.
CREATE FUNCTION bot4d_check_position_cap() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad record;
BEGIN
    SELECT n.seq, n.instrument, n.qty, i.position_cap INTO bad
      FROM new_rows n JOIN instruments i ON i.id = n.instrument
     WHERE i.position_cap IS NOT NULL AND abs(n.qty) > i.position_cap
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'position % on instrument % (journal seq %) exceeds its cap %',
            bad.qty, bad.instrument, bad.seq, bad.position_cap
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER positions_cap AFTER INSERT ON positions
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION bot4d_check_position_cap();

-- Journal rows name instruments and assets by id without a foreign key (a per-row FK check
-- halved the COPY rate); the writer refuses ids it does not find, and ids are never removed.
CREATE FUNCTION bot4d_refuse_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% rows are referenced by the journal tables and cannot be deleted', TG_TABLE_NAME;
END $$;
CREATE TRIGGER instruments_keep BEFORE DELETE OR TRUNCATE ON instruments
    FOR EACH STATEMENT EXECUTE FUNCTION bot4d_refuse_delete();
CREATE TRIGGER assets_keep BEFORE DELETE OR TRUNCATE ON assets
    FOR EACH STATEMENT EXECUTE FUNCTION bot4d_refuse_delete();

CREATE TABLE balances (
    shard            smallint NOT NULL,
    seq              bigint NOT NULL,
    ts               timestamptz NOT NULL,
    asset            integer NOT NULL,
    total            numeric NOT NULL,
    locked           numeric NOT NULL CHECK (locked >= 0),
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
    price            numeric,                            -- NULL when not about an instrument
    qty              numeric,
    aux0             bigint NOT NULL,
    aux1             bigint NOT NULL,
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

-- order ids are shard-local and a restarted daemon may count them again: not unique here
CREATE INDEX orders_order_id ON orders (shard, order_id);

-- Optional market-data tops (not fed by the journal yet: the daemon publishes tops to shared
-- memory; a recorder may COPY them here).
CREATE TABLE md_tops (
    ts               timestamptz NOT NULL,
    instrument       integer NOT NULL,
    bid              numeric NOT NULL,
    bid_qty          numeric NOT NULL,
    ask              numeric NOT NULL,
    ask_qty          numeric NOT NULL
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

-- No (shard, order_id) index on order_events: it cost a third of the table's insert rate. The
-- audit trail is written far more than it is read; add one in a later migration if queries need it.
CREATE VIEW orders_latest AS
    SELECT o.shard, o.order_id, o.instrument, o.client_order_id, o.price, o.qty,
           coalesce(e.state, o.state) AS state, coalesce(e.filled_qty, 0) AS filled_qty,
           coalesce(e.ts, o.ts) AS updated_at
      FROM orders o
      LEFT JOIN LATERAL (SELECT state, filled_qty, ts FROM order_events e
                          WHERE e.shard = o.shard AND e.order_id = o.order_id
                          ORDER BY seq DESC LIMIT 1) e ON true;

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
            -- two shards' writers may meet a new day together: one creates, the other waits
            -- here until that commits and then finds the partition exists
            PERFORM pg_advisory_xact_lock(1651470389, (day - DATE '2000-01-01'));
        END IF;
        IF to_regclass(quote_ident(part)) IS NULL THEN
            BEGIN
                EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                               part, t, day::timestamp AT TIME ZONE 'UTC',
                               (day + 1)::timestamp AT TIME ZONE 'UTC');
            EXCEPTION WHEN duplicate_table OR unique_violation THEN
                NULL;  -- the other writer created it (its commit came after our catalog lookup)
            END;
        END IF;
    END LOOP;
END $$;
