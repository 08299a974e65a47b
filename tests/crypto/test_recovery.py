"""Tests of the recovery key codec: written form, check digits and typo location."""

from __future__ import annotations

import binascii
import secrets

import pytest

from backvault.crypto.recovery import (
    DIGIT_COUNT,
    GROUP_COUNT,
    HEX_DIGITS,
    RecoveryKey,
    check_confirmation,
    compute_check,
    confirmation_challenge,
)
from backvault.errors import RecoveryKeyFormatError, UsageError

# Golden values. Each check was computed once with binascii.crc_hqx(secret, 0) and with the
# bitwise reference below, and the two agreed.
GOLDEN_KEYS = [
    (
        bytes(range(30)),
        "0001 0203 0405 0607 0809 0a0b 0c0d 0e0f 1011 1213 1415 1617 1819 1a1b 1c1d 1f11",
    ),
    (
        b"\xff" * 30,
        "ffff ffff ffff ffff ffff ffff ffff ffff ffff ffff ffff ffff ffff ffff ffff 75f8",
    ),
    (
        bytes.fromhex("38b4e652e44da7f2370d9e260e27136550a4a3a6d07f5c0c332f8b123fd2"),
        "38b4 e652 e44d a7f2 370d 9e26 0e27 1365 50a4 a3a6 d07f 5c0c 332f 8b12 3fd2 bd5e",
    ),
]

# Keys for the exhaustive typo tests: the golden keys and two more with mixed digits.
TYPO_TEST_SECRETS = [secret for secret, _ in GOLDEN_KEYS] + [
    bytes.fromhex("2b902f8911e81818f8c99d5d5d9831957504d90e945de2e8f54ee781f636"),
    bytes.fromhex("d85099095aa300165a67036f9b540d6b8f0be21124179c3dd9f73817118d"),
]


def reference_crc16_xmodem(data: bytes) -> int:
    """Compute CRC-16/XMODEM bit by bit: poly 0x1021, init 0, no reflection, no final XOR."""
    register = 0
    for byte in data:
        register ^= byte << 8
        for _ in range(8):
            carry = register & 0x8000
            register = (register << 1) & 0xFFFF
            if carry:
                register ^= 0x1021
    return register


def digits_of(key: RecoveryKey) -> str:
    return "".join(key.groups())


def replace_digit(digits: str, position: int, replacement: str) -> str:
    return digits[:position] + replacement + digits[position + 1 :]


def swap_neighbours(digits: str, position: int) -> str:
    return digits[:position] + digits[position + 1] + digits[position] + digits[position + 2 :]


def parse_error(text: str) -> RecoveryKeyFormatError:
    with pytest.raises(RecoveryKeyFormatError) as caught:
        RecoveryKey.parse(text)
    return caught.value


# The check


def test_check_matches_xmodem_check_value() -> None:
    # The bitwise reference follows the CRC-16/XMODEM parameters, so crc_hqx must agree.
    # 0x31C3 is the result for the ASCII digits 1 to 9.
    assert binascii.crc_hqx(b"123456789", 0) == 0x31C3
    assert reference_crc16_xmodem(b"123456789") == 0x31C3
    assert compute_check(b"123456789") == b"\x31\xc3"


def test_check_matches_reference_for_golden_keys() -> None:
    for secret, text in GOLDEN_KEYS:
        expected = reference_crc16_xmodem(secret).to_bytes(2, "big").hex()
        assert text.endswith(expected)
        assert compute_check(secret).hex() == expected


# Written form


@pytest.mark.parametrize(("secret", "text"), GOLDEN_KEYS)
def test_format_golden(secret: bytes, text: str) -> None:
    key = RecoveryKey.from_secret(secret)

    assert key.format() == text
    assert key.groups() == text.split(" ")


@pytest.mark.parametrize(("secret", "text"), GOLDEN_KEYS)
def test_parse_golden(secret: bytes, text: str) -> None:
    assert RecoveryKey.parse(text).secret == secret


def test_format_shape() -> None:
    key = RecoveryKey.generate()
    groups = key.groups()

    assert len(groups) == GROUP_COUNT
    for group in groups:
        assert len(group) == 4
        assert set(group) <= set(HEX_DIGITS)
    assert key.format() == " ".join(groups)
    assert len(key.format()) == 16 * 4 + 15


def test_generate_makes_distinct_keys() -> None:
    first = RecoveryKey.generate()
    second = RecoveryKey.generate()

    assert len(first.secret) == 30
    assert first != second


def test_round_trip() -> None:
    for _ in range(200):
        key = RecoveryKey.generate()
        assert RecoveryKey.parse(key.format()) == key
        assert RecoveryKey.parse(key.format()).secret == key.secret


@pytest.mark.parametrize("size", [0, 29, 31, 32])
def test_from_secret_wrong_size(size: int) -> None:
    with pytest.raises(ValueError, match=f"got {size}"):
        RecoveryKey.from_secret(bytes(size))


# Tolerance of case and separators


def test_parse_ignores_case_and_separators() -> None:
    secret, text = GOLDEN_KEYS[2]
    digits = text.replace(" ", "")
    variants = [
        text.upper(),
        digits,
        digits.upper(),
        "-".join(text.split(" ")),
        "\t".join(text.split(" ")),
        "\n".join(text.split(" ")),
        "\r\n".join(text.split(" ")),
        "  " + text + "\n",
        "\u2013".join(text.split(" ")),  # en dash, as a word processor may insert
        " - ".join(text.split(" ")),
        " ".join(digits),
    ]
    for variant in variants:
        assert RecoveryKey.parse(variant).secret == secret, repr(variant)


# Wrong length


def test_parse_missing_digit() -> None:
    digits = GOLDEN_KEYS[2][1].replace(" ", "")

    error = parse_error(digits[:-1])

    assert "63 hex digits, expected 64" in error.message
    assert "missing or extra digit" in error.message
    assert error.group is None
    assert error.hint is not None
    assert "recovery sheet" in error.hint


def test_parse_extra_digit() -> None:
    digits = GOLDEN_KEYS[2][1].replace(" ", "")

    error = parse_error(digits + "0")

    assert "65 hex digits, expected 64" in error.message


def test_parse_empty() -> None:
    error = parse_error("   ")

    assert "0 hex digits, expected 64" in error.message


def test_format_error_is_usage_error() -> None:
    with pytest.raises(UsageError):
        RecoveryKey.parse("1234")
    assert RecoveryKeyFormatError("x").exit_code == 2


# Characters that are not hex digits


def test_parse_non_hex_character() -> None:
    digits = GOLDEN_KEYS[0][1].replace(" ", "")
    typed = replace_digit(digits, 9, "g")  # digit 10 is in group 3

    error = parse_error(typed)

    assert "'g'" in error.message
    assert "group 3" in error.message
    assert "not a hex digit" in error.message
    assert "of 64" in error.message
    assert error.group == 3


def test_parse_non_hex_character_with_wrong_length() -> None:
    digits = GOLDEN_KEYS[0][1].replace(" ", "")
    typed = digits[:20] + "x" + digits[20:]

    error = parse_error(typed)

    assert "'x'" in error.message
    assert "group 6" in error.message
    assert "of 65" in error.message


def test_parse_lookalike_letter_hint() -> None:
    digits = GOLDEN_KEYS[0][1].replace(" ", "")
    typed = "O" + digits[1:]

    error = parse_error(typed)

    assert error.group == 1
    assert error.hint is not None
    assert "probably the digit 0" in error.hint


def test_parse_counts_several_non_hex_characters() -> None:
    digits = GOLDEN_KEYS[0][1].replace(" ", "")
    typed = replace_digit(replace_digit(digits, 50, "z"), 5, "q")

    error = parse_error(typed)

    assert "'q'" in error.message
    assert "group 2" in error.message
    assert "1 more character is not a hex digit" in error.message


def test_parse_non_ascii_character() -> None:
    digits = GOLDEN_KEYS[0][1].replace(" ", "")
    # A fullwidth digit looks like a hex digit but is not one.
    typed = replace_digit(digits, 0, "\uff10")

    error = parse_error(typed)

    assert error.group == 1
    assert "not a hex digit" in error.message


# Check failures and typo location


def test_single_typo_corrections_have_distinct_syndromes() -> None:
    # The syndrome of an error pattern is the check of its first 30 bytes XOR its last 2
    # bytes, because the CRC is linear when the initial value is 0 and there is no final XOR.
    # Distinct nonzero syndromes mean every single typo is detected and has one correction.
    def syndrome(nibbles: list[int]) -> bytes:
        error = bytes.fromhex("".join(f"{nibble:x}" for nibble in nibbles))
        check = compute_check(error[:30])
        return bytes(a ^ b for a, b in zip(check, error[30:], strict=True))

    syndromes: set[bytes] = set()
    patterns = 0
    for position in range(DIGIT_COUNT):
        for delta in range(1, 16):
            substitution = [0] * DIGIT_COUNT
            substitution[position] = delta
            syndromes.add(syndrome(substitution))
            patterns += 1
            if position + 1 < DIGIT_COUNT:
                # Swapping neighbours a and b changes both digits by a XOR b.
                swap = [0] * DIGIT_COUNT
                swap[position] = swap[position + 1] = delta
                syndromes.add(syndrome(swap))
                patterns += 1

    assert patterns == 64 * 15 + 63 * 15
    assert len(syndromes) == patterns
    assert b"\x00\x00" not in syndromes


def test_exhaustive_single_digit_typos() -> None:
    tested = 0
    for secret in TYPO_TEST_SECRETS:
        digits = digits_of(RecoveryKey.from_secret(secret))
        for position in range(DIGIT_COUNT):
            expected_group = position // 4 + 1
            typed_group_start = (expected_group - 1) * 4
            for replacement in HEX_DIGITS:
                if replacement == digits[position]:
                    continue
                typed = replace_digit(digits, position, replacement)
                error = parse_error(typed)
                tested += 1

                case = (secret.hex(), position, replacement)
                assert "fails its check" in error.message, case
                assert error.group == expected_group, case
                typed_group = typed[typed_group_start : typed_group_start + 4]
                assert f"group {expected_group} (digits {typed_group})" in error.message, case

    assert tested == len(TYPO_TEST_SECRETS) * 64 * 15


def test_exhaustive_neighbour_swaps() -> None:
    tested = 0
    for secret in TYPO_TEST_SECRETS:
        digits = digits_of(RecoveryKey.from_secret(secret))
        for position in range(DIGIT_COUNT - 1):
            if digits[position] == digits[position + 1]:
                continue
            error = parse_error(swap_neighbours(digits, position))
            tested += 1

            case = (secret.hex(), position)
            assert "fails its check" in error.message, case
            left_group = position // 4 + 1
            right_group = (position + 1) // 4 + 1
            if left_group == right_group:
                assert error.group == left_group, case
            else:
                assert error.group is None, case
                assert f"group {left_group} or {right_group}" in error.message, case

    assert tested > 200


def test_swap_across_groups_names_both() -> None:
    digits = digits_of(RecoveryKey.from_secret(GOLDEN_KEYS[0][0]))

    error = parse_error(swap_neighbours(digits, 3))  # last digit of group 1, first of group 2

    assert error.group is None
    assert "group 1 or 2" in error.message


def test_typo_in_check_group() -> None:
    digits = digits_of(RecoveryKey.from_secret(GOLDEN_KEYS[0][0]))

    error = parse_error(replace_digit(digits, 63, "0"))

    assert error.group == 16
    assert "group 16 (digits 1f10) is probably mistyped" in error.message
    assert error.hint is not None
    assert "group 16" in error.hint
    assert "recovery sheet" in error.hint


def test_two_typos_name_no_group() -> None:
    digits = digits_of(RecoveryKey.from_secret(GOLDEN_KEYS[0][0]))
    typed = replace_digit(replace_digit(digits, 2, "f"), 40, "f")

    error = parse_error(typed)

    assert error.group is None
    assert "no single group can be named" in error.message


def test_errors_never_echo_whole_key() -> None:
    text = GOLDEN_KEYS[2][1]
    digits = text.replace(" ", "")
    typed_variants = [
        replace_digit(digits, 30, "0" if digits[30] != "0" else "1"),
        swap_neighbours(digits, 10),
        digits[:-1],
        digits + "a",
        replace_digit(digits, 12, "k"),
    ]
    for typed in typed_variants:
        error = parse_error(typed)
        output = f"{error.message} {error.hint} {error}"
        assert typed not in output
        assert digits not in output
        assert text not in output
        # At most one group of the typed key may appear.
        assert len(error.message) < 200


# Representation and equality


def test_repr_hides_key() -> None:
    key = RecoveryKey.from_secret(GOLDEN_KEYS[2][0])

    assert repr(key) == "RecoveryKey(<hidden>)"
    assert str(key) == "RecoveryKey(<hidden>)"
    assert f"{key}" == "RecoveryKey(<hidden>)"
    for group in key.groups():
        assert group not in repr(key)


def test_equality() -> None:
    secret = GOLDEN_KEYS[2][0]
    key = RecoveryKey.from_secret(secret)

    assert key == RecoveryKey.from_secret(bytes(secret))
    assert key != RecoveryKey.from_secret(GOLDEN_KEYS[0][0])
    assert key != secret


def test_key_is_unhashable() -> None:
    with pytest.raises(TypeError):
        hash(RecoveryKey.generate())


# Confirmation


def test_confirmation_challenge_groups() -> None:
    seen: set[int] = set()
    for _ in range(500):
        first, second = confirmation_challenge()
        assert first != second
        assert 1 <= first <= GROUP_COUNT
        assert 1 <= second <= GROUP_COUNT
        assert first < second
        seen.update((first, second))
    assert seen == set(range(1, GROUP_COUNT + 1))


def test_confirmation_challenge_uses_given_rng() -> None:
    class RecordingRandom(secrets.SystemRandom):
        calls = 0

        def sample(self, *args: object, **kwargs: object) -> list[int]:  # type: ignore[override]
            RecordingRandom.calls += 1
            return [9, 4]

    assert confirmation_challenge(RecordingRandom()) == (4, 9)
    assert RecordingRandom.calls == 1


def test_check_confirmation() -> None:
    key = RecoveryKey.from_secret(GOLDEN_KEYS[2][0])
    # Group 5 of the golden key is "370d", group 16 is "bd5e".

    assert check_confirmation(key, 5, "370d")
    assert check_confirmation(key, 5, " 370D\n")
    assert check_confirmation(key, 5, "37-0d")
    assert check_confirmation(key, 16, "BD5E")
    assert not check_confirmation(key, 5, "370e")
    assert not check_confirmation(key, 5, "370")
    assert not check_confirmation(key, 6, "370d")
    assert not check_confirmation(key, 5, "")
    assert not check_confirmation(key, 5, "37\u00e9d")


@pytest.mark.parametrize("group_number", [0, 17, -1])
def test_check_confirmation_group_out_of_range(group_number: int) -> None:
    key = RecoveryKey.generate()

    with pytest.raises(ValueError, match="between 1 and 16"):
        check_confirmation(key, group_number, "0000")
