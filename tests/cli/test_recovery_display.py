"""Tests of the recovery key QR code for terminals and of the printable recovery sheet."""

from __future__ import annotations

import html
import io
import os
import pathlib
import stat
from collections.abc import Iterator

import pytest
import segno

from backvault.cli import recovery_display
from backvault.cli.recovery_display import (
    render_qr_terminal,
    render_recovery_sheet,
    write_recovery_sheet,
)
from backvault.crypto.recovery import RecoveryKey
from backvault.errors import UsageError

KEY = RecoveryKey.from_secret(
    bytes.fromhex("38b4e652e44da7f2370d9e260e27136550a4a3a6d07f5c0c332f8b123fd2")
)
KEY_TEXT = "38b4 e652 e44d a7f2 370d 9e26 0e27 1365 50a4 a3a6 d07f 5c0c 332f 8b12 3fd2 bd5e"

SHEET_DETAILS = {
    "repository": "/srv/backups/<laptop> & more",
    "repository_id": "9f86d081884c7d65",
    "created": "2024-05-01 14:30 UTC",
}

# (top dark, bottom dark) for each half-block character, with light modules drawn.
HALF_BLOCK_MODULES = {
    "\u2588": (False, False),
    "\u2580": (False, True),
    "\u2584": (True, False),
    " ": (True, True),
}


@pytest.fixture
def umask_zero() -> Iterator[None]:
    # With umask 0, a file created with default permissions would be world-readable.
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def expected_matrix() -> list[list[bool]]:
    code = segno.make(KEY_TEXT, error="m", micro=False)
    return [[bool(module) for module in row] for row in code.matrix_iter(border=4)]


# QR code for the terminal


def test_qr_terminal_uses_only_half_blocks() -> None:
    rendered = render_qr_terminal(KEY)

    assert rendered
    assert "\x1b" not in rendered
    assert set(rendered) <= set(HALF_BLOCK_MODULES) | {"\n"}


def test_qr_terminal_shape() -> None:
    lines = render_qr_terminal(KEY).split("\n")
    size = len(expected_matrix())

    assert size == 45  # version 5 (37 modules) and a quiet zone of 4 on each side
    assert len(lines) == (size + 1) // 2
    for line in lines:
        assert len(line) == size


def test_qr_terminal_draws_matrix_of_formatted_key() -> None:
    matrix = expected_matrix()
    lines = render_qr_terminal(KEY).split("\n")

    decoded: list[list[bool]] = []
    for line in lines:
        decoded.append([HALF_BLOCK_MODULES[char][0] for char in line])
        decoded.append([HALF_BLOCK_MODULES[char][1] for char in line])
    # The last line has a top half only, so the extra bottom row is all dark.
    assert decoded[-1] == [True] * len(matrix)
    assert decoded[:-1] == matrix


def test_qr_terminal_quiet_zone_is_light() -> None:
    lines = render_qr_terminal(KEY).split("\n")

    assert lines[0] == "\u2588" * len(lines[0])
    assert lines[1] == "\u2588" * len(lines[1])
    for line in lines[:-1]:
        assert line.startswith("\u2588" * 4)
        assert line.endswith("\u2588" * 4)


def test_qr_terminal_writes_to_non_tty(tmp_path: pathlib.Path) -> None:
    rendered = render_qr_terminal(KEY)
    buffer = io.StringIO()
    print(rendered, file=buffer)
    target = tmp_path / "qr.txt"
    target.write_text(rendered, encoding="utf-8")

    assert buffer.getvalue() == rendered + "\n"
    assert target.read_text(encoding="utf-8") == rendered


def test_qr_terminal_differs_between_keys() -> None:
    other = RecoveryKey.from_secret(bytes(30))

    assert render_qr_terminal(KEY) != render_qr_terminal(other)


# Recovery sheet contents


def test_sheet_shows_key_groups_in_order() -> None:
    sheet = render_recovery_sheet(KEY, **SHEET_DETAILS)

    positions = [sheet.index(f'<span class="digits">{group}</span>') for group in KEY.groups()]
    assert positions == sorted(positions)
    for number in range(1, 17):
        assert f'<span class="number">{number}</span>' in sheet


def test_sheet_shows_details_escaped() -> None:
    sheet = render_recovery_sheet(KEY, **SHEET_DETAILS)

    assert html.escape(SHEET_DETAILS["repository"]) in sheet
    assert "<laptop>" not in sheet
    assert SHEET_DETAILS["repository_id"] in sheet
    assert SHEET_DETAILS["created"] in sheet


def test_sheet_has_inline_qr_svg() -> None:
    sheet = render_recovery_sheet(KEY, **SHEET_DETAILS)
    expected_svg = segno.make(KEY_TEXT, error="m", micro=False).svg_inline(
        scale=5, border=4, dark="#000", light="#fff", title="Recovery key as a QR code"
    )

    assert sheet.count("<svg") == 1
    assert expected_svg in sheet


def test_sheet_is_self_contained() -> None:
    sheet = render_recovery_sheet(KEY, **SHEET_DETAILS).lower()

    assert "http:" not in sheet
    assert "https:" not in sheet
    assert "<script" not in sheet
    assert "<link" not in sheet
    assert "<img" not in sheet
    assert "src=" not in sheet
    assert "@import" not in sheet
    assert "url(" not in sheet


def test_sheet_has_instructions() -> None:
    sheet = render_recovery_sheet(KEY, **SHEET_DETAILS)

    assert "only way back" in sheet
    assert "offline" in sheet
    assert "Anyone who has this key and access to the repository" in sheet


def test_sheet_title_hides_key() -> None:
    sheet = render_recovery_sheet(KEY, **SHEET_DETAILS)
    title = sheet[sheet.index("<title>") : sheet.index("</title>")]

    for group in KEY.groups():
        assert group not in title


# Writing the sheet


def test_write_sheet_mode_0600(tmp_path: pathlib.Path, umask_zero: None) -> None:
    path = tmp_path / "recovery.html"

    write_recovery_sheet(KEY, path, **SHEET_DETAILS)

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text(encoding="utf-8") == render_recovery_sheet(KEY, **SHEET_DETAILS)
    assert sorted(tmp_path.iterdir()) == [path]


def test_write_sheet_rejects_existing_file(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "recovery.html"
    path.write_text("earlier sheet", encoding="utf-8")

    with pytest.raises(UsageError) as caught:
        write_recovery_sheet(KEY, path, **SHEET_DETAILS)

    assert str(path) in caught.value.message
    assert "already exists" in caught.value.message
    assert caught.value.hint is not None
    assert path.read_text(encoding="utf-8") == "earlier sheet"
    assert sorted(tmp_path.iterdir()) == [path]


def test_write_sheet_rejects_dangling_symlink(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "recovery.html"
    path.symlink_to(tmp_path / "elsewhere.html")

    with pytest.raises(UsageError, match="already exists"):
        write_recovery_sheet(KEY, path, **SHEET_DETAILS)

    assert not (tmp_path / "elsewhere.html").exists()


def test_write_sheet_rejects_file_created_after_check(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "recovery.html"
    path.write_text("created by another process", encoding="utf-8")
    # Make the first existence check miss the file, as if it appeared just after it.
    monkeypatch.setattr(recovery_display.os.path, "lexists", lambda _path: False)

    with pytest.raises(UsageError, match="already exists"):
        write_recovery_sheet(KEY, path, **SHEET_DETAILS)

    assert path.read_text(encoding="utf-8") == "created by another process"
    assert sorted(tmp_path.iterdir()) == [path]


def test_write_sheet_without_hard_links(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, umask_zero: None
) -> None:
    def unsupported_link(source: object, target: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(recovery_display.os, "link", unsupported_link)
    path = tmp_path / "recovery.html"

    write_recovery_sheet(KEY, path, **SHEET_DETAILS)

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert KEY.groups()[0] in path.read_text(encoding="utf-8")
    assert sorted(tmp_path.iterdir()) == [path]


def test_write_sheet_failure_leaves_nothing(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing_fsync(descriptor: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(recovery_display.os, "fsync", failing_fsync)
    path = tmp_path / "recovery.html"

    with pytest.raises(OSError, match="No space left"):
        write_recovery_sheet(KEY, path, **SHEET_DETAILS)

    assert list(tmp_path.iterdir()) == []


def test_write_sheet_missing_directory(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "missing" / "recovery.html"

    with pytest.raises(UsageError) as caught:
        write_recovery_sheet(KEY, path, **SHEET_DETAILS)

    assert str(path.parent) in caught.value.message
    assert caught.value.hint is not None
    assert not path.parent.exists()
