"""Create a bucket or sum the object sizes under a prefix, for the backvault-s3 target.

run.py needs only the standard library, so it runs this script with the Python of
backvault's virtual environment, which has boto3. The endpoint and the credentials come
from the AWS_* variables.

    python s3_objects.py create-bucket BUCKET
    python s3_objects.py size BUCKET PREFIX    # prints {"objects": N, "bytes": N}
"""

from __future__ import annotations

import argparse
import json
import sys

import boto3


def create_bucket(bucket: str) -> None:
    boto3.client("s3").create_bucket(Bucket=bucket)


def prefix_size(bucket: str, prefix: str) -> tuple[int, int]:
    """Return the number of objects under ``prefix`` and the sum of their sizes in bytes."""
    paginator = boto3.client("s3").get_paginator("list_objects_v2")
    objects = 0
    total = 0
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        for entry in page.get("Contents", []):
            objects += 1
            total += int(entry["Size"])
    return objects, total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create-bucket", help="create BUCKET")
    create.add_argument("bucket")
    size = commands.add_parser("size", help="print the object count and bytes under PREFIX")
    size.add_argument("bucket")
    size.add_argument("prefix")
    arguments = parser.parse_args(argv)

    if arguments.command == "create-bucket":
        create_bucket(arguments.bucket)
    else:
        objects, total = prefix_size(arguments.bucket, arguments.prefix)
        print(json.dumps({"objects": objects, "bytes": total}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
