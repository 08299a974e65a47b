"""expand_message_xmd with SHA-512 (RFC 9380, section 5.3.1)."""

from __future__ import annotations

import hashlib

SHA512_OUTPUT_BYTES = 64  # b_in_bytes of RFC 9380
SHA512_BLOCK_BYTES = 128  # s_in_bytes of RFC 9380
MAX_DST_BYTES = 255
MAX_OUTPUT_BYTES = 65535
MAX_BLOCKS = 255


def expand_message_xmd_sha512(message: bytes, dst: bytes, length: int) -> bytes:
    """Expand ``message`` into ``length`` uniformly random bytes, domain-separated by ``dst``.

    Raises ``ValueError`` where RFC 9380 says ABORT: ``length`` above 65535 or above 255
    SHA-512 blocks, or a ``dst`` longer than 255 bytes. Every caller in this package passes
    fixed lengths and DSTs well inside these limits.
    """
    block_count = -(-length // SHA512_OUTPUT_BYTES)
    if block_count > MAX_BLOCKS or length > MAX_OUTPUT_BYTES or length < 0:
        raise ValueError(f"expand_message_xmd cannot produce {length} bytes")
    if len(dst) > MAX_DST_BYTES:
        raise ValueError(f"expand_message_xmd DST is {len(dst)} bytes, the maximum is 255")

    dst_prime = dst + len(dst).to_bytes(1, "big")
    z_pad = bytes(SHA512_BLOCK_BYTES)
    length_bytes = length.to_bytes(2, "big")
    message_prime = z_pad + message + length_bytes + b"\x00" + dst_prime

    b_0 = hashlib.sha512(message_prime).digest()
    b_i = hashlib.sha512(b_0 + b"\x01" + dst_prime).digest()
    uniform_bytes = [b_i]
    for i in range(2, block_count + 1):
        chained = bytes(x ^ y for x, y in zip(b_0, b_i, strict=True))
        b_i = hashlib.sha512(chained + i.to_bytes(1, "big") + dst_prime).digest()
        uniform_bytes.append(b_i)
    return b"".join(uniform_bytes)[:length]
