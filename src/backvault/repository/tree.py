"""Trees: one blob per directory, listing its entries and their metadata.

A tree blob's plaintext is the header (magic "BVTR", version 1) followed by a msgpack map
``{"nodes": [node, ...]}`` with the nodes sorted by name bytes. A node is a msgpack map
with these keys; absent optional keys mean "not recorded":

=========  ==========  =========================================================
key        type        meaning
=========  ==========  =========================================================
name       bytes       the exact file name bytes, never decoded
type       str         file, dir, symlink, fifo, chardev, blockdev or socket
mode       int         permission bits including setuid, setgid and sticky
uid, gid   int         numeric owner and group
user       str         owner name at backup time (optional)
group      str         group name at backup time (optional)
mtime      int         modification time, nanoseconds since the epoch (may be < 0)
ctime      int         status change time, nanoseconds
inode      int         inode number at backup time
device     int         device number of the file system at backup time
links      int         number of hard links at backup time
size       int         file size in bytes: the bytes actually stored for a file
content    list        blob ids (32 bytes each) of the file's chunks, in order
subtree    bytes       tree blob id of a directory
target     bytes       symlink target, exact bytes
rdev       int         device number of a character or block device
xattrs     map         extended attribute name bytes to value bytes (optional)
changed    bool        true if the file changed while it was read (optional)
=========  ==========  =========================================================

Times are integers, not ``datetime``, so dates before 1970 and after 2038 round-trip.
The access time is not recorded: reading a tree for a backup changes it, so recording it
would make every backup store every tree anew. A restore sets it to the mtime.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgpack

from backvault.errors import IntegrityError
from backvault.repository.format import HEADER_SIZE, MAGIC_TREE, check_header, make_header

NODE_TYPES = ("file", "dir", "symlink", "fifo", "chardev", "blockdev", "socket")


@dataclass(slots=True)
class Node:
    name: bytes
    type: str
    mode: int = 0
    uid: int = 0
    gid: int = 0
    user: str | None = None
    group: str | None = None
    mtime: int = 0
    ctime: int = 0
    inode: int = 0
    device: int = 0
    links: int = 1
    size: int = 0
    content: list[bytes] = field(default_factory=list)
    subtree: bytes | None = None
    target: bytes | None = None
    rdev: int = 0
    xattrs: dict[bytes, bytes] = field(default_factory=dict)
    changed: bool = False

    def to_map(self) -> dict[str, Any]:
        result: dict[str, Any] = {
            "name": self.name, "type": self.type, "mode": self.mode, "uid": self.uid,
            "gid": self.gid, "mtime": self.mtime, "ctime": self.ctime,
            "inode": self.inode, "device": self.device, "links": self.links, "size": self.size,
        }
        optional: dict[str, Any] = {
            "user": self.user, "group": self.group, "subtree": self.subtree,
            "target": self.target,
        }
        result.update({key: value for key, value in optional.items() if value is not None})
        if self.type == "file":
            result["content"] = self.content
        if self.type in ("chardev", "blockdev"):
            result["rdev"] = self.rdev
        if self.xattrs:
            result["xattrs"] = self.xattrs
        if self.changed:
            result["changed"] = True
        return result

    @classmethod
    def from_map(cls, data: dict[str, Any]) -> Node:
        node = cls(name=bytes(data["name"]), type=str(data["type"]))
        for key in ("mode", "uid", "gid", "mtime", "ctime", "inode", "device",
                    "links", "size", "rdev"):
            if key in data:
                setattr(node, key, int(data[key]))
        node.user = data.get("user")
        node.group = data.get("group")
        node.content = [bytes(blob_id) for blob_id in data.get("content", [])]
        node.subtree = data.get("subtree")
        node.target = data.get("target")
        node.xattrs = {bytes(k): bytes(v) for k, v in data.get("xattrs", {}).items()}
        node.changed = bool(data.get("changed", False))
        if node.type not in NODE_TYPES:
            raise ValueError(f"unknown node type {node.type!r}")
        return node


def encode_tree(nodes: list[Node]) -> bytes:
    return encode_tree_maps([node.to_map() for node in nodes])


def encode_tree_maps(maps: list[dict[str, Any]]) -> bytes:
    """Encode node maps as a tree blob; equal maps always give equal bytes."""
    ordered = sorted(maps, key=lambda item: bytes(item["name"]))
    return make_header(MAGIC_TREE) + msgpack.packb({"nodes": ordered}, use_bin_type=True)


def decode_tree_maps(data: bytes, *, subject: str) -> list[dict[str, Any]]:
    """Decode a tree blob into its node maps without building :class:`Node` objects."""
    check_header(data, MAGIC_TREE, subject=subject)
    try:
        nodes = msgpack.unpackb(data[HEADER_SIZE:], raw=False)["nodes"]
    except (ValueError, KeyError, TypeError, msgpack.UnpackException):
        raise IntegrityError(subject) from None
    if not isinstance(nodes, list) or not all(isinstance(item, dict) for item in nodes):
        raise IntegrityError(subject)
    return nodes


def decode_tree(data: bytes, *, subject: str) -> list[Node]:
    maps = decode_tree_maps(data, subject=subject)
    try:
        return [Node.from_map(item) for item in maps]
    except (ValueError, KeyError, TypeError, AttributeError):
        raise IntegrityError(subject) from None
