"""PostgreSQL binary COPY streams built with numpy, one vectorised pass per column.

Every column the sidecar sends on its hot path has a fixed width (smallint, integer, bigint,
boolean, timestamptz), so a tuple is a fixed-size packed struct: int16 field count, then for each
field an int32 length and the big-endian value. numpy fills that struct for a whole batch and
``tobytes()`` is the COPY payload, which psycopg's ``copy.write`` passes through unchanged. This is
what makes ``COPY ... FROM STDIN (FORMAT BINARY)`` cheap on the client: no Python object per value.

NUMERIC is fixed-width too, by construction: an int64 number of units at a scale of 0..18 is
sent as exactly 10 base-10000 digits with weight 4 (five digits before the point, covering
|units| < 10^20, and five after it, covering 20 decimals). numeric_recv accepts leading and
trailing zero digits and normalises them away (make_result strips them), and ``dscale`` carries
the instrument's scale, so the stored value is exactly units / 10^scale, computed with integer
arithmetic only.

Formats: https://www.postgresql.org/docs/15/sql-copy.html ("Binary Format");
NUMERIC's send/recv layout (ndigits, weight, sign, dscale, int16 digits) in PostgreSQL's
src/backend/utils/adt/numeric.c (numeric_send / numeric_recv).
"""
from __future__ import annotations

import numpy as np

HEADER = b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")
TRAILER = (-1).to_bytes(2, "big", signed=True)

# PostgreSQL epoch (2000-01-01) in Unix nanoseconds; timestamptz travels as int64 microseconds.
PG_EPOCH_NS = 946_684_800 * 1_000_000_000

# pg type name -> big-endian numpy type of its binary send format
PG_BINARY = {
    "smallint": ">i2",
    "integer": ">i4",
    "bigint": ">i8",
    "boolean": "u1",
    "timestamptz": ">i8",
    "numeric": (">i2", (14,)),
}

NUMERIC_POS = 0x0000
NUMERIC_NEG = 0x4000
_P10 = np.array([10**k for k in range(20)], dtype=np.uint64)
_D4 = np.uint64(10_000)


def numeric_words(units: np.ndarray, scale: np.ndarray | int) -> np.ndarray:
    """Binary NUMERIC of ``units / 10**scale`` as (n, 14) int16 words: header then 10 digits.

    Integer arithmetic only (uint64), so the value is exact for every int64 and scale 0..18.
    """
    u = np.asarray(units, dtype=np.int64)
    s = np.broadcast_to(np.asarray(scale, dtype=np.int64), u.shape)
    if s.size and (s.min() < 0 or s.max() > 18):
        raise ValueError("NUMERIC scale outside 0..18")
    neg = u < 0
    # |INT64_MIN| does not fit in int64: negate as -(u + 1) + 1 in uint64
    mag = np.where(neg, -(u + 1), u).astype(np.uint64) + neg.astype(np.uint64)
    ip = mag // _P10[s]
    frac = mag % _P10[s]                      # `s` decimals
    small = s <= 10
    up = _P10[np.clip(10 - s, 0, 19)]
    dn = _P10[np.clip(s - 10, 0, 19)]
    hi = np.where(small, frac * up, frac // dn)                       # decimals 1..10
    lo = np.where(small, np.uint64(0), (frac % dn) * _P10[np.clip(20 - s, 0, 19)])  # 11..20
    w = np.empty(u.shape + (14,), dtype=np.int64)
    w[..., 0] = 10
    w[..., 1] = 4
    w[..., 2] = np.where(neg, NUMERIC_NEG, NUMERIC_POS)
    w[..., 3] = s
    w[..., 4] = ip // _P10[16]
    w[..., 5] = (ip // _P10[12]) % _D4
    w[..., 6] = (ip // _P10[8]) % _D4
    w[..., 7] = (ip // _D4) % _D4
    w[..., 8] = ip % _D4
    w[..., 9] = hi // _P10[6]
    w[..., 10] = (hi // _P10[2]) % _D4
    w[..., 11] = (hi % _P10[2]) * _P10[2] + lo // _P10[8]
    w[..., 12] = (lo // _D4) % _D4
    w[..., 13] = lo % _D4
    return w


def ns_to_pg_us(ts_ns: np.ndarray) -> np.ndarray:
    """Unix ns -> microseconds since 2000-01-01, floor (timestamptz has µs resolution)."""
    return (np.asarray(ts_ns, dtype=np.int64) - PG_EPOCH_NS) // 1000


def encode(columns: list[tuple[str, str, object]], *, kernels: bool = True) -> bytes:
    """Tuples for ``columns`` = [(name, pg_type, values), ...], without header/trailer.

    ``values`` is an integer array of any width (the caller keeps it in the type's range), or for
    ``numeric`` a tuple ``(units, scale_table, index)``: value i is
    ``units[i] / 10**scale_table[index[i]]``. ``kernels`` selects the numba writer
    (``copykern``); the numpy path is the reference it is tested against.
    """
    if not columns:
        raise ValueError("no columns")
    first = columns[0][2]
    n = len(first[0] if isinstance(first, tuple) else first)
    if kernels:
        return _encode_kernels(columns, n)
    fields: list[tuple[str, object]] = [("nf", ">i2")]
    for i, (_, pgtype, _) in enumerate(columns):
        fields += [(f"l{i}", ">i4"), (f"v{i}", PG_BINARY[pgtype])]
    rec = np.empty(n, dtype=np.dtype(fields))  # packed: no alignment padding
    rec["nf"] = len(columns)
    for i, (name, pgtype, vals) in enumerate(columns):
        rec[f"l{i}"] = np.dtype(PG_BINARY[pgtype]).itemsize
        if pgtype == "numeric":
            units, table, idx = vals  # type: ignore[misc]
            vals = numeric_words(units, np.asarray(table)[idx])
        elif pgtype == "timestamptz":
            vals = ns_to_pg_us(vals)  # type: ignore[arg-type]
        if len(vals) != n:  # type: ignore[arg-type]
            raise ValueError(f"column {name} has {len(vals)} values, expected {n}")  # type: ignore[arg-type]
        rec[f"v{i}"] = vals
    return rec.tobytes()


def _encode_kernels(columns: list[tuple[str, str, object]], n: int) -> bytes:
    from bot4d.persist import copykern as K

    widths = [4 + np.dtype(PG_BINARY[t]).itemsize for _, t, _ in columns]
    stride = 2 + sum(widths)
    out = np.empty(n * stride, np.uint8)
    K.put_count(out, stride, len(columns), n)
    off = 2
    for (name, pgtype, vals), w in zip(columns, widths):
        if pgtype == "numeric":
            units, table, idx = vals  # type: ignore[misc]
            if len(units) != n:
                raise ValueError(f"column {name} has {len(units)} values, expected {n}")
            K.put_numeric(out, stride, off, units, np.asarray(table), idx, n)
        else:
            if len(vals) != n:  # type: ignore[arg-type]
                raise ValueError(f"column {name} has {len(vals)} values, expected {n}")  # type: ignore[arg-type]
            if pgtype == "timestamptz":
                K.put_ts(out, stride, off, vals, n)
            else:
                v = vals.view(np.uint8) if vals.dtype == np.bool_ else vals  # type: ignore[union-attr]
                K.put_int(out, stride, off, w - 4, v, n)
        off += w
    return out.tobytes()
