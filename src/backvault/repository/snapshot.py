"""Snapshots: one encrypted file per backup, pointing at the root tree.

A snapshot file is an encrypted file (magic "BVSN") whose body is a msgpack map:
time (int, ns since the epoch), hostname (str), username (str), paths (list of bytes,
the absolute source paths), tree (32-byte root tree id), parent (str snapshot id or nil),
skipped (list of [path bytes, reason str]), changed (list of path bytes: files that
changed while they were read), summary (map of str to int), program_version (str).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgpack

from backvault.errors import IntegrityError


@dataclass
class Snapshot:
    time_ns: int
    hostname: str
    username: str
    paths: list[bytes]
    tree: bytes
    parent: str | None = None
    skipped: list[tuple[bytes, str]] = field(default_factory=list)
    changed: list[bytes] = field(default_factory=list)
    summary: dict[str, int] = field(default_factory=dict)
    program_version: str = ""
    snapshot_id: str = ""  # the storage name; not part of the encoded body

    @property
    def short_id(self) -> str:
        return self.snapshot_id[:8]

    def to_map(self) -> dict[str, Any]:
        return {
            "time": self.time_ns, "hostname": self.hostname, "username": self.username,
            "paths": self.paths, "tree": self.tree, "parent": self.parent,
            "skipped": [[path, reason] for path, reason in self.skipped],
            "changed": self.changed, "summary": self.summary,
            "program_version": self.program_version,
        }


def encode_snapshot(snapshot: Snapshot) -> bytes:
    return msgpack.packb(snapshot.to_map(), use_bin_type=True)


def decode_snapshot(body: bytes, snapshot_id: str, *, subject: str) -> Snapshot:
    try:
        data = msgpack.unpackb(body, raw=False)
        return Snapshot(
            time_ns=int(data["time"]),
            hostname=str(data["hostname"]),
            username=str(data["username"]),
            paths=[bytes(p) for p in data["paths"]],
            tree=bytes(data["tree"]),
            parent=data["parent"],
            skipped=[(bytes(path), str(reason)) for path, reason in data["skipped"]],
            changed=[bytes(p) for p in data["changed"]],
            summary={str(k): int(v) for k, v in data["summary"].items()},
            program_version=str(data["program_version"]),
            snapshot_id=snapshot_id,
        )
    except (ValueError, KeyError, TypeError, AttributeError, msgpack.UnpackException):
        raise IntegrityError(subject) from None
