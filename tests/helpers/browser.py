"""Headless Debian Chromium through Playwright, with a CDP virtual WebAuthn authenticator.

Chromium is the system's ``/usr/bin/chromium`` (``apt-get install chromium``); Playwright
never downloads a browser here. Each :func:`authenticator_page` gets a new browser
context, which is a fresh profile: no cookies, storage or passkeys from another test.

Typical use in a test, with the ``chromium`` and ``screenshots`` fixtures of
``tests/conftest.py``::

    def test_enrol(chromium: Browser, screenshots: Path) -> None:
        with authenticator_page(chromium, prf=True) as tab:
            tab.page.goto(f"http://localhost:{port}/passkey/enrol#...")
            tab.page.keyboard.press("Tab")
            tab.page.keyboard.press("Enter")
            save_screenshot(tab.page, screenshots, "enrol")
            assert len(tab.credentials()) == 1

Load pages at ``http://localhost:PORT``: WebAuthn rejects an IP address such as
127.0.0.1 as a relying party id, and treats ``localhost`` as a secure context.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, CDPSession, ConsoleMessage, Page, sync_playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGUMENTS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOT_DIR_VARIABLE = "BACKVAULT_SCREENSHOT_DIR"
SCREENSHOT_NAME = re.compile(r"[A-Za-z0-9_.-]+")
DEFAULT_SCREENSHOT_DIR = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"


@dataclass
class AuthenticatorPage:
    """A page in a fresh browser context with one virtual authenticator attached."""

    page: Page
    session: CDPSession  # the Chrome DevTools Protocol session of ``page``
    authenticator_id: str
    console: list[str] = field(default_factory=list)  # the page's console output, in order

    def credentials(self) -> list[dict[str, Any]]:
        """Return the credentials stored in the authenticator (CDP ``WebAuthn.getCredentials``)."""
        result = self.session.send(
            "WebAuthn.getCredentials", {"authenticatorId": self.authenticator_id}
        )
        credentials: list[dict[str, Any]] = result["credentials"]
        return credentials


@contextmanager
def launch_chromium() -> Iterator[Browser]:
    """Start headless Chromium for the ``with`` block; it takes about a second."""
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing; install it with 'apt-get install chromium'")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGUMENTS
        )
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def authenticator_page(browser: Browser, *, prf: bool = True) -> Iterator[AuthenticatorPage]:
    """Open a page in a new context with a virtual authenticator for the ``with`` block.

    The authenticator is a CTAP2 platform authenticator ("internal" transport) with
    resident keys and user verification that always succeeds without a prompt. With
    ``prf=False`` it lacks the PRF extension (hmac-secret underneath), so a
    ``create()`` reports ``prf.enabled`` false and a ``get()`` returns no PRF results.
    """
    context = browser.new_context()
    try:
        page = context.new_page()
        session = context.new_cdp_session(page)
        session.send("WebAuthn.enable", {"enableUI": False})
        added = session.send("WebAuthn.addVirtualAuthenticator", {"options": {
            "protocol": "ctap2",
            "transport": "internal",
            "hasResidentKey": True,
            "hasUserVerification": True,
            "isUserVerified": True,
            "automaticPresenceSimulation": True,
            "hasPrf": prf,
        }})
        tab = AuthenticatorPage(page, session, added["authenticatorId"])

        def keep_console_line(message: ConsoleMessage) -> None:
            tab.console.append(f"{message.type}: {message.text}")

        page.on("console", keep_console_line)
        page.on("pageerror", lambda error: tab.console.append(f"page error: {error}"))
        yield tab
    finally:
        context.close()


def screenshot_directory() -> Path:
    """Return the folder for screenshots, created if missing, and print where it is.

    It is ``$BACKVAULT_SCREENSHOT_DIR`` when that is set. Otherwise it is
    ``test-artifacts/screenshots`` in the checkout, which git ignores, so a reviewer
    finds the screenshots after the run.
    """
    configured = os.environ.get(SCREENSHOT_DIR_VARIABLE)
    directory = Path(configured).absolute() if configured else DEFAULT_SCREENSHOT_DIR
    directory.mkdir(parents=True, exist_ok=True)
    print(f"screenshots of the passkey pages are saved in {directory}")
    return directory


def save_screenshot(page: Page, directory: Path, name: str) -> Path:
    """Save a full-page PNG of ``page`` as ``directory/NAME.png`` and return its path."""
    if SCREENSHOT_NAME.fullmatch(name) is None:
        raise ValueError(f"invalid screenshot name {name!r}: use letters, digits, '.', '_', '-'")
    path = directory / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"saved screenshot {path}")
    return path
