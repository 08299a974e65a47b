"""The key-stretching options of add-password and change-password."""

from __future__ import annotations

import argparse

import pytest

from backvault.cli.password_commands import (
    DEFAULT_ARGON2_ITERATIONS,
    DEFAULT_ARGON2_LANES,
    DEFAULT_ARGON2_MEMORY,
    _ksf_from_options,
)
from backvault.errors import UsageError
from backvault.opaque import Argon2idKsf


def options(memory: int | None = None, iterations: int | None = None) -> argparse.Namespace:
    return argparse.Namespace(
        argon2_memory=memory, argon2_iterations=iterations, argon2_lanes=None
    )


def test_change_keeps_replaced_parameters() -> None:
    replaced = Argon2idKsf(memory_kib=8192, iterations=1, lanes=1)

    assert _ksf_from_options(options(), replaced=replaced) is replaced


def test_new_slot_gets_defaults() -> None:
    parameters = _ksf_from_options(options()).parameters()

    assert parameters["memory_kib"] == DEFAULT_ARGON2_MEMORY
    assert parameters["iterations"] == DEFAULT_ARGON2_ITERATIONS
    assert parameters["lanes"] == DEFAULT_ARGON2_LANES


def test_one_option_overrides_replaced() -> None:
    replaced = Argon2idKsf(memory_kib=8192, iterations=1, lanes=1)

    parameters = _ksf_from_options(options(memory=16384), replaced=replaced).parameters()

    assert parameters["memory_kib"] == 16384
    assert parameters["iterations"] == DEFAULT_ARGON2_ITERATIONS


def test_zero_memory_rejected() -> None:
    with pytest.raises(UsageError):
        _ksf_from_options(options(memory=0))
