"""Key-stretching functions: Stretch(msg) of RFC 9807, section 2.3.

The client stretches the 64-byte OPRF output before it derives the randomized password,
so that a stolen registration record costs the attacker one KSF run per guessed password.
The parameters are stored next to the registration (``parameters()``) and read back with
:func:`ksf_from_parameters`, so they can be raised for new registrations later.
"""

from __future__ import annotations

from typing import Protocol

from argon2.low_level import Type, hash_secret_raw

from backvault.opaque.kdf import NH

ARGON2_SALT = bytes(16)
"""The fixed Argon2id salt.

RFC 9807 defines Stretch(msg) without a salt, and its recommended configuration
(section 7) is Argon2id with S = zeroes(16) and output length T = Nh. opaque-ke 4.0.1
(``src/ksf.rs``) passes the same 16 zero bytes. The OPRF output already depends on the
per-credential OPRF key as well as the password, so it does the work of a salt.
"""
ARGON2_VERSION = 0x13
MAX_ARGON2_MEMORY_KIB = 2**22  # 4 GiB; twice the m = 2**21 of RFC 9807, section 7
# Upper bounds that reject a damaged stored value before it allocates or runs for hours.
MAX_ARGON2_ITERATIONS = 1024
MAX_ARGON2_LANES = 255

KSF_IDENTITY = "identity"
KSF_ARGON2ID = "argon2id"


class Ksf(Protocol):
    """A key-stretching function with its parameters."""

    def stretch(self, data: bytes) -> bytes:
        """Return Stretch(data), of the same length as ``data`` (Nh bytes)."""
        ...

    def parameters(self) -> dict[str, int | str]:
        """Return the name and parameters that :func:`ksf_from_parameters` accepts."""
        ...


class IdentityKsf:
    """The identity function, used by the RFC 9807 test vectors and never for real passwords."""

    def stretch(self, data: bytes) -> bytes:
        return data

    def parameters(self) -> dict[str, int | str]:
        return {"name": KSF_IDENTITY}

    def __repr__(self) -> str:
        return "IdentityKsf()"


class Argon2idKsf:
    """Argon2id (RFC 9106, version 0x13) with a fixed all-zero 16-byte salt and a 64-byte output.

    ``memory_kib`` is the memory cost in KiB (1024-byte blocks), ``iterations`` the number
    of passes and ``lanes`` the degree of parallelism. The default of 64 MiB, 3 passes and
    4 lanes is the second recommended option of RFC 9106, section 4.
    """

    def __init__(self, memory_kib: int = 65536, iterations: int = 3, lanes: int = 4) -> None:
        _check_int("lanes", lanes, 1, MAX_ARGON2_LANES)
        _check_int("memory_kib", memory_kib, 8 * lanes, MAX_ARGON2_MEMORY_KIB)
        _check_int("iterations", iterations, 1, MAX_ARGON2_ITERATIONS)
        self.memory_kib = memory_kib
        self.iterations = iterations
        self.lanes = lanes

    def stretch(self, data: bytes) -> bytes:
        return hash_secret_raw(
            secret=data,
            salt=ARGON2_SALT,
            time_cost=self.iterations,
            memory_cost=self.memory_kib,
            parallelism=self.lanes,
            hash_len=NH,
            type=Type.ID,
            version=ARGON2_VERSION,
        )

    def parameters(self) -> dict[str, int | str]:
        return {
            "name": KSF_ARGON2ID,
            "memory_kib": self.memory_kib,
            "iterations": self.iterations,
            "lanes": self.lanes,
        }

    def __repr__(self) -> str:
        return (
            f"Argon2idKsf(memory_kib={self.memory_kib}, iterations={self.iterations}, "
            f"lanes={self.lanes})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Argon2idKsf):
            return NotImplemented
        return self.parameters() == other.parameters()

    def __hash__(self) -> int:
        return hash((self.memory_kib, self.iterations, self.lanes))


def ksf_from_parameters(parameters: dict[str, int | str]) -> Ksf:
    """Build the KSF that ``parameters`` (the output of ``Ksf.parameters()``) describes.

    Raises ``ValueError`` for an unknown name, a missing or extra key, or a value out of
    range, so a damaged stored value never silently selects weaker parameters.
    """
    name = parameters.get("name")
    if name == KSF_IDENTITY:
        _check_keys(parameters, {"name"})
        return IdentityKsf()
    if name == KSF_ARGON2ID:
        _check_keys(parameters, {"name", "memory_kib", "iterations", "lanes"})
        return Argon2idKsf(
            memory_kib=_int_parameter(parameters, "memory_kib"),
            iterations=_int_parameter(parameters, "iterations"),
            lanes=_int_parameter(parameters, "lanes"),
        )
    raise ValueError(f"unknown key-stretching function {name!r}; expected 'argon2id' or 'identity'")


def _check_keys(parameters: dict[str, int | str], expected: set[str]) -> None:
    if set(parameters) != expected:
        raise ValueError(
            f"key-stretching parameters {sorted(parameters)} do not match {sorted(expected)}"
        )


def _int_parameter(parameters: dict[str, int | str], key: str) -> int:
    value = parameters[key]
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"key-stretching parameter {key} must be an integer, not {value!r}")
    return value


def _check_int(name: str, value: int, minimum: int, maximum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"Argon2id {name} must be an integer, not {value!r}")
    if not minimum <= value <= maximum:
        raise ValueError(f"Argon2id {name} is {value}; it must be between {minimum} and {maximum}")
