"""Writes the Parquet cases of the bad-input corpus (run once; the files are checked in).

    python3 -m venv /tmp/pa && /tmp/pa/bin/pip install pyarrow==26.0.1
    /tmp/pa/bin/python testdata/make_bad_parquet.py
"""
import os

import pyarrow as pa
import pyarrow.parquet as pq

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bad-inputs", "parquet")


def write(name, table):
    pq.write_table(table, os.path.join(HERE, name), compression="snappy")


# The payments dataset expects payment_id, order_id, method, amount, paid_at.
good = pa.table(
    {
        "payment_id": ["p-1", "p-2"],
        "order_id": pa.array([1, 2], pa.int64()),
        "method": ["card", "iban"],
        "amount": ["10.50", "3.00"],
        "paid_at": ["2026-11-24T10:00:00Z", "2026-11-24T11:00:00Z"],
    }
)
write("other_schema.parquet", pa.table({"id": pa.array([1, 2], pa.int64()), "note": ["a", "b"]}))
write(
    "wrong_types.parquet",
    pa.table(
        {
            "payment_id": pa.array([1, 2], pa.int64()),
            "order_id": ["one", "2"],
            "method": ["card", "iban"],
            "amount": pa.array([1.5, 2.25], pa.float64()),
            "paid_at": pa.array([True, False]),
        }
    ),
)
write(
    "convertible_types.parquet",
    pa.table(
        {
            "payment_id": pa.array([1, 2], pa.int64()),
            "order_id": ["one", "2"],
            "method": ["card", "iban"],
            "amount": pa.array([1.5, 2.25], pa.float64()),
            "paid_at": ["2026-11-24T10:00:00Z", "2026-11-24T11:00:00Z"],
        }
    ),
)
write("empty.parquet", good.slice(0, 0))
sink = pa.BufferOutputStream()
pq.write_table(good, sink)
data = sink.getvalue().to_pybytes()
with open(os.path.join(HERE, "truncated.parquet"), "wb") as f:
    f.write(data[: len(data) // 2])
with open(os.path.join(HERE, "not_parquet.parquet"), "wb") as f:
    f.write(b"payment_id,order_id\np-1,1\n")
