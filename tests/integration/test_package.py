"""The wheel: built from the checkout, installed into a fresh venv elsewhere, it runs on its own.

The rules, the topic definitions and schemas, the field mappings and the rule-test fixtures
travel inside it as package data; nothing is looked up in a checkout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.broker import free_port
from tests import PROJECT_ROOT

SAMPLE = (
    PROJECT_ROOT
    / "tests"
    / "fixtures"
    / "demo"
    / "sysmon_wmic_node_credential_dumping_via_copy.log"
)
GOLDEN = PROJECT_ROOT / "tests" / "golden" / f"{SAMPLE.name}.jsonl"
NOT_SOURCES = shutil.ignore_patterns(
    ".venv", ".git", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".wmiwatch"
)


def run(command: list[str | Path], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``command`` in ``cwd`` with no project settings or paths inherited; it must succeed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WMIWATCH_", "PYTHON"))}
    done = subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the wheel from a clean copy of the sources, install it in a new venv; return bin/.

    The dependencies come from ``requirements.lock`` with their hashes, as the Dockerfile
    installs them, and ``pip check`` proves the lock holds everything the wheel needs.
    """
    root = tmp_path_factory.mktemp("package")
    sources = root / "sources"
    shutil.copytree(PROJECT_ROOT, sources, symlinks=True, ignore=NOT_SOURCES)
    run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", root / "dist", "."], sources
    )
    (wheel,) = (root / "dist").glob("wmiwatch-*.whl")
    run([sys.executable, "-m", "venv", root / "venv"], root)
    pip = [root / "venv" / "bin" / "python", "-m", "pip"]
    lock = sources / "requirements.lock"
    run([*pip, "install", "-q", "--require-hashes", "--no-deps", "-r", lock], root)
    run([*pip, "install", "-q", "--no-deps", wheel], root)
    run([*pip, "check"], root)
    shutil.rmtree(sources)
    return root / "venv" / "bin"


def test_the_installed_package_is_the_wheel_not_the_checkout(
    installed: Path, tmp_path: Path
) -> None:
    command = [installed / "python", "-c", "import pipeline; print(pipeline.CONTENT)"]
    where = run(command, tmp_path).stdout
    assert where.strip().startswith(str(installed.parent))
    assert (Path(where.strip()) / "rules" / "macros.yml").is_file()


def test_the_package_carries_its_licence_notice_and_version(
    installed: Path, tmp_path: Path
) -> None:
    script = (
        "from importlib.metadata import distribution as d; w = d('wmiwatch');"
        "print(w.metadata['License-Expression'], sorted(f.name for f in w.files"
        " if 'licenses' in str(f)))"
    )
    shown = run([installed / "python", "-c", script], tmp_path).stdout
    assert shown.strip() == "Apache-2.0 ['LICENSE', 'NOTICE']"
    version = run([installed / "wmiwatch", "--version"], tmp_path).stdout
    assert version.strip().startswith("wmiwatch 0.")


def test_the_installed_rules_pass_their_own_tests(installed: Path, tmp_path: Path) -> None:
    done = run([installed / "wmiwatch", "test-rules"], tmp_path)
    passed, failed, untested = done.stderr.strip().splitlines()[-1].split(", ")  # the summary
    assert int(passed.removesuffix(" passed")) >= 30
    assert (failed, untested) == ("0 failed", "0 untested")


def test_the_installed_detect_gives_the_golden_findings(installed: Path, tmp_path: Path) -> None:
    relative = SAMPLE.relative_to(PROJECT_ROOT)  # the golden evidence names the file so
    (tmp_path / relative).parent.mkdir(parents=True)
    shutil.copy(SAMPLE, tmp_path / relative)
    done = run([installed / "wmiwatch", "detect", "--format", "jsonl", relative], tmp_path)
    assert done.stdout.encode() == GOLDEN.read_bytes()


def test_the_broker_command_without_the_local_extra_says_how_to_get_it(
    installed: Path, tmp_path: Path
) -> None:
    done = subprocess.run(
        [installed / "wmiwatch", "broker", "--port", str(free_port())],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1
    assert "the local broker needs: pip install 'wmiwatch[local]'" in done.stderr
    assert "Traceback" not in done.stdout + done.stderr
