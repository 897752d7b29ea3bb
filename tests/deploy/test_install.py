"""deploy/install.sh into a temporary root, and the systemd unit checked by systemd-analyze."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("root")
    proc = subprocess.run(["bash", str(REPO / "deploy" / "install.sh"), "--root", str(root)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root


def test_layout(installed: Path) -> None:
    assert (installed / "etc/meter-gateway/config.toml").is_file()
    assert (installed / "etc/meter-gateway/env").stat().st_mode & 0o777 == 0o600
    assert (installed / "var/lib/meter-gateway").is_dir()
    assert (installed / "etc/systemd/system/meter-gateway.service").is_file()
    config = (installed / "etc/meter-gateway/config.toml").read_text()
    assert 'data_dir = "/var/lib/meter-gateway"' in config


def test_installed_command_checks_the_installed_config(installed: Path) -> None:
    exe = installed / "opt/meter-gateway/venv/bin/meter-gateway"
    proc = subprocess.run([str(exe), "config", "check", str(installed / "etc/meter-gateway/config.toml")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "edge-1" in proc.stdout


def test_second_install_keeps_the_edited_config(installed: Path) -> None:
    cfg = installed / "etc/meter-gateway/config.toml"
    cfg.write_text(cfg.read_text().replace('id = "edge-1"', 'id = "edited"'))
    proc = subprocess.run(["bash", str(REPO / "deploy" / "install.sh"), "--root", str(installed)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'id = "edited"' in cfg.read_text()


def test_systemd_analyze_verify(installed: Path) -> None:
    # verify resolves units and executables inside --root; give it systemd's own units.
    shutil.copytree("/usr/lib/systemd/system", installed / "usr/lib/systemd/system", symlinks=True, dirs_exist_ok=True)
    proc = subprocess.run(["systemd-analyze", "verify", f"--root={installed}",
                           "/etc/systemd/system/meter-gateway.service"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    # Unknown or misspelt directives are only warnings; there must be none.
    assert proc.stderr.strip() == "" and proc.stdout.strip() == "", proc.stderr + proc.stdout


def test_unit_is_hardened() -> None:
    unit = (REPO / "deploy/systemd/meter-gateway.service").read_text()
    for directive in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "NoNewPrivileges=yes",
                      "ProtectSystem=strict", "PrivateTmp=yes", "ReadWritePaths=/var/lib/meter-gateway",
                      "SupplementaryGroups=dialout", "User=meter-gateway"):
        assert directive in unit, directive
