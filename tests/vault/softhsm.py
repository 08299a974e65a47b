"""Make SoftHSM2 tokens for tests, in a private token directory.

SoftHSM2 finds its token directory through the config file named by ``SOFTHSM2_CONF``,
so a test session points that variable at a config in a temporary directory and
``softhsm2-util --init-token`` creates tokens there. Server processes started by the
tests inherit the variable.
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

# Where Debian's libsofthsm2 package installs the module, first the usual path.
MODULE_PATHS = (
    Path("/usr/lib/softhsm/libsofthsm2.so"),
    Path("/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so"),
    Path("/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so"),
    Path("/usr/local/lib/softhsm/libsofthsm2.so"),
)
COMMAND_TIMEOUT = 60  # seconds
TEST_PIN = "1234-test-pin"
TEST_SO_PIN = "5678-test-so-pin"


def find_module() -> Path | None:
    """Return the SoftHSM2 PKCS#11 module, or None when SoftHSM2 is not installed."""
    if shutil.which("softhsm2-util") is None:
        return None
    return next((path for path in MODULE_PATHS if path.exists()), None)


@dataclass(frozen=True)
class SoftHsmToken:
    module: Path
    label: str
    pin: str
    pin_file: Path

    def vault_settings(self) -> dict[str, str]:
        """Return the ``[vault]`` settings that select this token."""
        return {
            "pkcs11_module": str(self.module), "pkcs11_token": self.label,
            "pkcs11_pin_file": str(self.pin_file),
        }


class SoftHsm:
    """A SoftHSM2 configuration whose tokens live under ``directory``."""

    def __init__(self, directory: Path, module: Path) -> None:
        self.directory = directory
        self.module = module
        self.token_dir = directory / "tokens"
        self.token_dir.mkdir(parents=True)
        self.config_path = directory / "softhsm2.conf"
        self.config_path.write_text(
            f"directories.tokendir = {self.token_dir}\n"
            "objectstore.backend = file\n"
            "log.level = ERROR\n"
        )

    def environment(self) -> dict[str, str]:
        return {"SOFTHSM2_CONF": str(self.config_path)}

    def new_token(self, prefix: str = "backvault-test") -> SoftHsmToken:
        """Initialize a new token in the first free slot and return how to reach it."""
        label = f"{prefix}-{uuid.uuid4().hex[:8]}"
        subprocess.run(
            ["softhsm2-util", "--init-token", "--free", "--label", label,
             "--pin", TEST_PIN, "--so-pin", TEST_SO_PIN],
            check=True, capture_output=True, text=True, timeout=COMMAND_TIMEOUT,
            env={"SOFTHSM2_CONF": str(self.config_path), "PATH": "/usr/bin:/bin"},
            stdin=subprocess.DEVNULL,
        )
        pin_file = self.directory / f"{label}.pin"
        pin_file.write_text(TEST_PIN + "\n")
        pin_file.chmod(0o600)
        return SoftHsmToken(self.module, label, TEST_PIN, pin_file)
