"""Show a recovery key to the user: a QR code for the terminal and a printable HTML sheet.

``backvault init`` and ``backvault key show`` use these helpers. Both encode the written form
of the key (16 groups of 4 hex digits) so that a scanned code and a typed key are the same
text, and ``RecoveryKey.parse`` accepts either.
"""

from __future__ import annotations

import contextlib
import html
import os
import pathlib
import tempfile

import segno

from backvault.crypto.recovery import RecoveryKey
from backvault.errors import UsageError

# Error correction level M recovers 15% of the data, per the segno documentation of make().
# segno raises the level further when that fits in the same QR version.
QR_ERROR_LEVEL = "m"
QR_QUIET_ZONE = 4  # modules of light margin, segno's default for QR codes
SHEET_MODE = 0o600

# Half-block characters for two module rows per text line, indexed by (top dark, bottom dark).
# Light modules are drawn as character cells and dark modules as blanks. On the usual light
# text on dark background, the code then shows dark on light, as scanners expect.
_HALF_BLOCKS = {
    (False, False): "\u2588",  # full block
    (False, True): "\u2580",  # upper half block
    (True, False): "\u2584",  # lower half block
    (True, True): " ",
}


def _make_qr(key: RecoveryKey) -> segno.QRCode:
    return segno.make(key.format(), error=QR_ERROR_LEVEL, micro=False)


def render_qr_terminal(key: RecoveryKey) -> str:
    """Render the QR code of the formatted key as lines of half-block characters.

    The result has no escape sequences, so it reads the same on a terminal, in a pipe or in
    a file. Each line contains two rows of modules, quiet zone included.
    """
    # NOTE: on a terminal with dark text on a light background the code shows inverted,
    # and a scanner that cannot read inverted codes fails on it.
    rows = [
        [bool(module) for module in row] for row in _make_qr(key).matrix_iter(border=QR_QUIET_ZONE)
    ]
    if len(rows) % 2 == 1:
        # A QR symbol has an odd number of rows. An extra row of dark modules, which are
        # drawn as blanks, leaves only the top half of the last line drawn.
        rows.append([True] * len(rows[0]))
    lines: list[str] = []
    for top_index in range(0, len(rows), 2):
        pairs = zip(rows[top_index], rows[top_index + 1], strict=True)
        lines.append("".join(_HALF_BLOCKS[pair] for pair in pairs))
    return "\n".join(lines)


def render_recovery_sheet(
    key: RecoveryKey, *, repository: str, repository_id: str, created: str
) -> str:
    """Return the recovery sheet as a self-contained HTML page with no external resources."""
    qr_svg = _make_qr(key).svg_inline(
        scale=5,
        border=QR_QUIET_ZONE,
        dark="#000",
        light="#fff",
        title="Recovery key as a QR code",
    )
    group_cells = "\n".join(
        f'      <div class="group"><span class="number">{number}</span>'
        f'<span class="digits">{digits}</span></div>'
        for number, digits in enumerate(key.groups(), start=1)
    )
    return _SHEET_TEMPLATE.format(
        repository=html.escape(repository),
        repository_id=html.escape(repository_id),
        created=html.escape(created),
        groups=group_cells,
        qr_svg=qr_svg,
    )


def write_recovery_sheet(
    key: RecoveryKey, path: pathlib.Path, *, repository: str, repository_id: str, created: str
) -> None:
    """Write the printable recovery sheet to ``path`` with mode 0600.

    The sheet is written to a temporary file in the same directory and then linked to
    ``path``, so a failure leaves no half-written sheet. Raise UsageError if ``path`` already
    exists or its directory cannot be written.
    """
    content = render_recovery_sheet(
        key, repository=repository, repository_id=repository_id, created=created
    ).encode("utf-8")

    if os.path.lexists(path):
        raise _exists_error(path)

    directory = path.parent
    try:
        # mkstemp creates the file with mode 0600, whatever the umask.
        descriptor, temporary_name = tempfile.mkstemp(
            dir=directory, prefix=f".{path.name}.", suffix=".tmp"
        )
    except OSError as error:
        raise UsageError(
            f"cannot create the recovery sheet in {directory}: {error.strerror or error}",
            hint="Give a path in an existing directory that you can write to.",
        ) from error

    temporary = pathlib.Path(temporary_name)
    try:
        with os.fdopen(descriptor, "wb") as file:
            os.fchmod(file.fileno(), SHEET_MODE)
            file.write(content)
            file.flush()
            os.fsync(file.fileno())
        _move_without_overwrite(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()


def _move_without_overwrite(source: pathlib.Path, target: pathlib.Path) -> None:
    # A hard link fails with FileExistsError if the target exists, even if another process
    # created it after the check in write_recovery_sheet. The caller removes the source.
    try:
        os.link(source, target)
    except FileExistsError as error:
        raise _exists_error(target) from error
    except OSError:
        # Some file systems, FAT for one, have no hard links. There a rename is the fallback,
        # and it would replace a file that another process created since the last check.
        if os.path.lexists(target):
            raise _exists_error(target) from None
        os.rename(source, target)


def _exists_error(path: pathlib.Path) -> UsageError:
    return UsageError(
        f"{path} already exists, so the recovery sheet was not written",
        hint="Give a file name that does not exist yet, or move the existing file away first.",
    )


# Plain str.format template, so literal CSS braces are doubled.
_SHEET_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>backvault recovery sheet</title>
  <style>
    body {{ font-family: sans-serif; color: #000; background: #fff; margin: 2em; }}
    h1 {{ font-size: 1.6em; margin-bottom: 0.2em; }}
    table.details {{ border-collapse: collapse; margin: 1em 0; }}
    table.details th {{ text-align: left; padding-right: 1.5em; font-weight: normal; }}
    table.details td {{ font-family: monospace; }}
    .key {{ display: grid; grid-template-columns: repeat(4, max-content); gap: 0.6em 1.6em;
            margin: 1.5em 0; page-break-inside: avoid; }}
    .group {{ display: flex; flex-direction: column; align-items: center; }}
    .number {{ font-size: 0.8em; color: #444; }}
    .digits {{ font-family: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace;
               font-size: 2em; letter-spacing: 0.08em; }}
    .qr {{ margin: 1em 0; page-break-inside: avoid; }}
    .warning {{ border: 2px solid #000; padding: 0.8em 1em; max-width: 42em; }}
    li {{ margin: 0.4em 0; max-width: 42em; }}
  </style>
</head>
<body>
  <h1>backvault recovery sheet</h1>
  <table class="details">
    <tr><th>Repository</th><td>{repository}</td></tr>
    <tr><th>Repository id</th><td>{repository_id}</td></tr>
    <tr><th>Created</th><td>{created}</td></tr>
  </table>

  <p class="warning">This recovery key is the only way back into your backups if every other
  way to unlock the repository is lost. Anyone who has this key and access to the repository
  can read all of its backups.</p>

  <h2>Recovery key</h2>
  <div class="key">
{groups}
  </div>

  <div class="qr">
{qr_svg}
  </div>

  <h2>Instructions</h2>
  <ul>
    <li>Print this page and keep the paper offline, in a safe place such as a locked drawer
    or a safe. Do not store the key in email, a cloud drive or a photo.</li>
    <li>After printing, delete this file or move it to offline storage. A copy left on a
    computer is only as safe as that computer.</li>
    <li>When backvault asks for the recovery key, type the 16 groups in order. Case, spaces
    and dashes do not matter. The QR code contains the same text.</li>
    <li>The last group is a check. If one digit is mistyped, backvault reports which group
    is probably wrong, so compare that group with this sheet.</li>
  </ul>
</body>
</html>
"""
