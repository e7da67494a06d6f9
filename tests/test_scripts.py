"""scripts/install-servers.sh, run against stand-in commands (apt-get, systemctl, sudo) that
only record their arguments: it installs what is missing, and stops services only on CI."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "install-servers.sh"
BASH = shutil.which("bash") or "/bin/bash"


def fake_bin(tmp_path: Path, present: list[str]) -> tuple[Path, Path]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    recorder = f'#!{BASH}\necho "${{0##*/}} $*" >> {log}\n'
    for name in ("apt-get", "systemctl", *present):
        path = bin_dir / name
        path.write_text(recorder)
        path.chmod(0o755)
    sudo = bin_dir / "sudo"
    sudo.write_text(f'#!{BASH}\necho "sudo $*" >> {log}\nexec "$@"\n')
    sudo.chmod(0o755)
    real_id = shutil.which("id")
    assert real_id is not None
    (bin_dir / "id").symlink_to(real_id)
    return bin_dir, log


def run(bin_dir: Path, ci: bool) -> subprocess.CompletedProcess[str]:
    env = {"PATH": str(bin_dir), "HOME": os.environ.get("HOME", "/tmp")}
    if ci:
        env["CI"] = "true"
    return subprocess.run(
        [BASH, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=30, check=False
    )


def calls(log: Path) -> list[str]:
    if not log.exists():
        return []
    return [line for line in log.read_text().splitlines() if not line.startswith("sudo ")]


def test_a_contributors_services_are_never_stopped(tmp_path: Path) -> None:
    """redis is installed and running as the contributor's own service; memcached is
    missing: it is installed, and no service is stopped."""
    bin_dir, log = fake_bin(tmp_path, present=["redis-server", "redis-cli"])
    result = run(bin_dir, ci=False)
    assert result.returncode == 0, result.stderr
    made = calls(log)
    assert any(c.startswith("apt-get install") and c.endswith(" memcached") for c in made)
    assert not any(c.startswith("systemctl") for c in made), made
    assert "sudo systemctl disable --now memcached" in result.stdout  # said, not done


def test_on_ci_only_the_services_just_installed_are_stopped(tmp_path: Path) -> None:
    bin_dir, log = fake_bin(tmp_path, present=["redis-server", "redis-cli"])
    result = run(bin_dir, ci=True)
    assert result.returncode == 0, result.stderr
    assert [c for c in calls(log) if c.startswith("systemctl")] == [
        "systemctl disable --now memcached"
    ]


@pytest.mark.parametrize("ci", [False, True])
def test_nothing_missing_nothing_done(tmp_path: Path, ci: bool) -> None:
    bin_dir, log = fake_bin(tmp_path, present=["redis-server", "redis-cli", "memcached"])
    result = run(bin_dir, ci=ci)
    assert result.returncode == 0, result.stderr
    assert calls(log) == []


def test_test_sh_delegates_and_has_no_systemctl_of_its_own() -> None:
    text = (SCRIPT.parent / "test.sh").read_text()
    assert "bash scripts/install-servers.sh" in text
    assert "systemctl" not in text
