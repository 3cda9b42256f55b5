"""A producer on boto3, unchanged from one that puts to AWS, pointed at the local
Kinesis-compatible endpoint. Usage: kinesis_endpoint.py ENDPOINT STREAM COUNT

Puts COUNT records in PutRecords calls of 500 (putting failed entries again, as a real
producer must) and one with PutRecord, checks the calls a producer makes before it puts,
and that Kinesis's limits come back as its errors. Prints one JSON line of what it saw."""

import json
import sys

import boto3
from botocore.exceptions import ClientError

endpoint, stream, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
kinesis = boto3.client(
    "kinesis",
    endpoint_url=endpoint,
    region_name="us-east-1",
    aws_access_key_id="local",
    aws_secret_access_key="local",
)

summary = kinesis.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]
shards = kinesis.list_shards(StreamName=stream)["Shards"]


def error_code(call):
    try:
        call()
    except ClientError as err:
        return err.response["Error"]["Code"]
    return None


too_many = error_code(
    lambda: kinesis.put_records(
        StreamName=stream,
        Records=[{"Data": b"{}", "PartitionKey": "k"}] * 501,
    )
)
unknown = error_code(
    lambda: kinesis.put_record(StreamName="no-such-stream", Data=b"{}", PartitionKey="k")
)

records = [
    {"Data": json.dumps({"id": n, "name": f"item {n}"}).encode(), "PartitionKey": str(n)}
    for n in range(count)
]
put, calls = 0, 0
for start in range(0, len(records), 500):
    batch = records[start : start + 500]
    while batch:
        calls += 1
        answer = kinesis.put_records(StreamName=stream, Records=batch)
        put += len(batch) - answer["FailedRecordCount"]
        batch = [r for r, e in zip(batch, answer["Records"]) if "ErrorCode" in e]
single = kinesis.put_record(
    StreamName=stream,
    Data=json.dumps({"id": count, "name": "the last one"}).encode(),
    PartitionKey="last",
)
put += 1

print(
    json.dumps(
        {
            "status": summary["StreamStatus"],
            "open_shards": summary["OpenShardCount"],
            "shards": [s["ShardId"] for s in shards],
            "too_many": too_many,
            "unknown_stream": unknown,
            "put": put,
            "calls": calls,
            "single_shard": single["ShardId"],
        }
    )
)
