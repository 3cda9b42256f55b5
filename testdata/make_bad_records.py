"""Writes the bad-record corpus, testdata/bad-records/ (run once; the files are checked in,
their outcomes are in its manifest.toml). Python 3 standard library only.

    python3 testdata/make_bad_records.py
"""
import base64
import gzip
import json
import os

ROOT = os.path.dirname(os.path.abspath(__file__))
HERE = os.path.join(ROOT, "bad-records")
KPL = os.path.join(ROOT, "..", "ingest-stream", "tests", "fixtures", "kpl", "three-records.b64")


def event(**fields):
    record = {
        "event_type": "order_status_changed",
        "event_id": "e-1",
        "order_id": 7,
        "status": "shipped",
        "occurred_at": "2026-11-24T10:00:00Z",
    }
    record.update(fields)
    return json.dumps(record).encode()


def write(name, data):
    with open(os.path.join(HERE, name), "wb") as f:
        f.write(data)


without_order = json.loads(event())
del without_order["order_id"]
deep_tail = b'"extra":' + b"[" * 300 + b"]" * 300 + b"}"
zipped = gzip.compress(event(), mtime=0)
with open(KPL) as f:
    kpl = base64.b64decode(f.read().strip())

write("valid.json", event())
write("truncated.json", event()[:40])
write("array.json", b'[{"event_type":"order_status_changed"}]')
write("deep.json", event()[:-1] + b"," + deep_tail)
write("wrong_type.json", event(order_id="seven"))
write("missing_field.json", json.dumps(without_order).encode())
write("unrouted.json", b'{"event_type":"cart_updated","cart_id":1}')
write("not_utf8.bin", b'\xff\xfe\x00{"a":1}')
write("bom.json", b"\xef\xbb\xbf" + event())
write("duplicate_keys.json", event()[:-1] + b',"status":"delivered"}')
write("truncated.json.gz", zipped[: len(zipped) // 2])
write("corrupt.json.zst", b"\x28\xb5\x2f\xfd" + b"garbage that is not a zstd frame")
write("bomb.json.gz", gzip.compress(b'{"status":"' + b" " * (20 * 1024 * 1024) + b'"}', 9, mtime=0))
write("oversized.json.gz", gzip.compress(event(status="x" * (900 * 1024)), 9, mtime=0))
write("kpl_bad_checksum.bin", kpl[:-1] + bytes([kpl[-1] ^ 0xFF]))
write("kpl_truncated.bin", kpl[: len(kpl) // 2])
