"""The recovery key: 30 random bytes and a 2-byte check, written as 64 hex digits.

The written form is 16 groups of 4 lowercase hex digits separated by single spaces::

    1a2b 3c4d 5e6f ... (16 groups)

The last 4 digits are the check: the CRC of the first 30 bytes, stored big-endian. The check
lets ``parse`` reject a mistyped key at once, and point at the group that is probably wrong,
before any key derivation or decryption runs.
"""

from __future__ import annotations

import binascii
import hmac
import secrets

from backvault.errors import RecoveryKeyFormatError

SECRET_SIZE = 30  # bytes, 240 bits of entropy
CHECK_SIZE = 2  # bytes
DIGIT_COUNT = 2 * (SECRET_SIZE + CHECK_SIZE)  # 64 hex digits
GROUP_SIZE = 4  # hex digits per group
GROUP_COUNT = DIGIT_COUNT // GROUP_SIZE  # 16 groups

HEX_DIGITS = "0123456789abcdef"
_HEX_DIGITS_ANY_CASE = frozenset(HEX_DIGITS + HEX_DIGITS.upper())
# Separators that ``parse`` skips, besides every character for which str.isspace() is true.
# The Unicode dashes may come in when a key is copied out of a word processor or a web page.
DASHES = frozenset("-\u2010\u2011\u2012\u2013\u2014\u2212")

SHEET_HINT = "Compare each group with the printed recovery sheet and type the key again."


def compute_check(secret: bytes) -> bytes:
    """Return the 2-byte check of ``secret``: its CRC-16/XMODEM, big-endian.

    ``binascii.crc_hqx(data, 0)`` computes the CRC with polynomial x^16 + x^12 + x^5 + 1
    (0x1021), per the Python documentation of ``binascii``. With initial value 0, no bit
    reflection and no final XOR, that is the parameter set named CRC-16/XMODEM, whose check
    value for b"123456789" is 0x31C3 (the tests verify this).

    A CRC whose generator polynomial has degree 16 and a nonzero constant term detects every
    error burst of 16 bits or less in the 256-bit codeword (secret followed by its check).
    A single mistyped hex digit changes 4 adjacent bits, and a swap of two neighbouring digits
    changes at most 8 adjacent bits, so the check catches every one of these typos.
    """
    return binascii.crc_hqx(secret, 0).to_bytes(CHECK_SIZE, "big")


class RecoveryKey:
    """A recovery key. ``repr`` and ``str`` never show the secret."""

    __slots__ = ("_secret",)

    def __init__(self, secret: bytes) -> None:
        if len(secret) != SECRET_SIZE:
            raise ValueError(
                f"a recovery key secret must be {SECRET_SIZE} bytes, got {len(secret)}"
            )
        self._secret = bytes(secret)

    @property
    def secret(self) -> bytes:
        """The 30 random bytes, without the check."""
        return self._secret

    @classmethod
    def generate(cls) -> RecoveryKey:
        """Make a new recovery key from the operating system's random source."""
        return cls(secrets.token_bytes(SECRET_SIZE))

    @classmethod
    def from_secret(cls, secret: bytes) -> RecoveryKey:
        """Wrap existing secret bytes. Raise ValueError unless ``secret`` is 30 bytes."""
        return cls(secret)

    @classmethod
    def parse(cls, text: str) -> RecoveryKey:
        """Parse a typed recovery key, ignoring case, whitespace and dashes.

        Raise RecoveryKeyFormatError when the text has a character that is not a hex digit,
        does not have 64 hex digits, or fails its check. The message never repeats the
        whole key.
        """
        digits = _normalise_digits(text)
        if not _passes_check(digits):
            raise _check_failure(digits)
        return cls(bytes.fromhex(digits)[:SECRET_SIZE])

    def groups(self) -> list[str]:
        """Return the 16 groups of 4 lowercase hex digits, the check in the last group."""
        digits = (self._secret + compute_check(self._secret)).hex()
        return [digits[start : start + GROUP_SIZE] for start in range(0, DIGIT_COUNT, GROUP_SIZE)]

    def format(self) -> str:
        """Return the written form: 16 groups of 4 hex digits separated by single spaces."""
        return " ".join(self.groups())

    def __repr__(self) -> str:
        return "RecoveryKey(<hidden>)"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RecoveryKey):
            return NotImplemented
        return hmac.compare_digest(self._secret, other._secret)

    # No __hash__: defining __eq__ leaves the class unhashable, so that no hash value
    # computed from the secret ever exists.


def _normalise_digits(text: str) -> str:
    """Return the 64 lowercase hex digits of ``text``, or raise RecoveryKeyFormatError."""
    characters: list[str] = []
    invalid: list[tuple[int, str]] = []  # (index in characters, character)
    for char in text:
        if char.isspace() or char in DASHES:
            continue
        if char not in _HEX_DIGITS_ANY_CASE:
            invalid.append((len(characters), char))
        characters.append(char.lower())

    if invalid:
        raise _invalid_character_error(invalid, len(characters))

    if len(characters) != DIGIT_COUNT:
        raise RecoveryKeyFormatError(
            f"the recovery key has {len(characters)} hex digits, expected {DIGIT_COUNT}; "
            "check for a missing or extra digit",
            hint=SHEET_HINT,
        )
    return "".join(characters)


# Letters that people often type for a digit that looks like them.
_LOOKALIKE_DIGITS = {"o": "0", "i": "1", "l": "1", "s": "5"}


def _invalid_character_error(invalid: list[tuple[int, str]], length: int) -> RecoveryKeyFormatError:
    index, char = invalid[0]
    group = index // GROUP_SIZE + 1
    message = (
        f"the recovery key contains {char!r} in group {group}, which is not a hex digit "
        f"(character {index + 1} of {length}, not counting spaces and dashes)"
    )
    others = len(invalid) - 1
    if others == 1:
        message += ", and 1 more character is not a hex digit"
    elif others > 1:
        message += f", and {others} more characters are not hex digits"
    hint = "A recovery key uses only the digits 0-9 and the letters a-f."
    lookalike = _LOOKALIKE_DIGITS.get(char.lower())
    if lookalike is not None:
        hint += f" The letter {char!r} is probably the digit {lookalike}."
    hint += " " + SHEET_HINT
    return RecoveryKeyFormatError(message, group=group, hint=hint)


def _passes_check(digits: str) -> bool:
    raw = bytes.fromhex(digits)
    return compute_check(raw[:SECRET_SIZE]) == raw[SECRET_SIZE:]


def _candidate_error_positions(digits: str) -> set[int]:
    """Return the 0-based digit positions whose correction would make the check pass.

    Try every single-digit substitution (64 positions x 15 values) and every swap of two
    neighbouring digits. This uses only the check and needs no repository. Each of these
    1905 corrections changes the CRC residue by a distinct nonzero value (the tests check
    all of them), so a key with exactly one such typo has exactly one candidate: the true
    correction. With two or more typos there may be no candidate, or candidates in groups
    that contain no typo.
    """
    positions: set[int] = set()
    for position in range(DIGIT_COUNT):
        for replacement in HEX_DIGITS:
            if replacement == digits[position]:
                continue
            candidate = digits[:position] + replacement + digits[position + 1 :]
            if _passes_check(candidate):
                positions.add(position)

    for position in range(DIGIT_COUNT - 1):
        left, right = digits[position], digits[position + 1]
        if left == right:
            continue
        candidate = digits[:position] + right + left + digits[position + 2 :]
        if _passes_check(candidate):
            positions.update((position, position + 1))
    return positions


def _check_failure(digits: str) -> RecoveryKeyFormatError:
    groups = sorted({position // GROUP_SIZE + 1 for position in _candidate_error_positions(digits)})
    prefix = f"the recovery key has {DIGIT_COUNT} hex digits but fails its check"

    if len(groups) == 1:
        group = groups[0]
        start = (group - 1) * GROUP_SIZE
        typed = digits[start : start + GROUP_SIZE]
        return RecoveryKeyFormatError(
            f"{prefix}: group {group} (digits {typed}) is probably mistyped",
            group=group,
            hint=f"Compare group {group} with the printed recovery sheet and type the key again.",
        )

    if len(groups) == 2:
        message = f"{prefix}: the mistake is probably in group {groups[0]} or {groups[1]}"
    elif groups:
        listed = ", ".join(str(group) for group in groups)
        message = f"{prefix}: the mistake is probably in one of groups {listed}"
    else:
        message = (
            f"{prefix}, and no single group can be named, so probably more than one digit is wrong"
        )
    return RecoveryKeyFormatError(message, group=None, hint=SHEET_HINT)


def confirmation_challenge(rng: secrets.SystemRandom | None = None) -> tuple[int, int]:
    """Choose two distinct 1-based group numbers, in ascending order, for the user to type back."""
    chooser = rng if rng is not None else secrets.SystemRandom()
    first, second = sorted(chooser.sample(range(1, GROUP_COUNT + 1), 2))
    return first, second


def check_confirmation(key: RecoveryKey, group_number: int, typed: str) -> bool:
    """Return whether ``typed`` matches group ``group_number`` (1-based) of ``key``.

    Case, whitespace and dashes in ``typed`` are ignored. The comparison runs in constant
    time. Raise ValueError if ``group_number`` is not between 1 and 16.
    """
    if not 1 <= group_number <= GROUP_COUNT:
        raise ValueError(f"group number must be between 1 and {GROUP_COUNT}, got {group_number}")
    normalised = "".join(char.lower() for char in typed if not (char.isspace() or char in DASHES))
    expected = key.groups()[group_number - 1]
    return hmac.compare_digest(normalised.encode("utf-8"), expected.encode("ascii"))
