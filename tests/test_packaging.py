"""Packaging metadata: a license file, classifiers, extras that cover the integrations, and
a bound on redis-py (the Cluster path uses its connection internals)."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
EXTRAS = PROJECT["optional-dependencies"]


def test_license_file() -> None:
    assert PROJECT["license"] == "MIT"
    assert PROJECT["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License")
    assert "acacheorm contributors" in text


def test_classifiers() -> None:
    classifiers = PROJECT["classifiers"]
    assert "Framework :: AsyncIO" in classifiers
    assert "Typing :: Typed" in classifiers
    assert "Programming Language :: Python :: 3.11" in classifiers


def test_all_includes_every_integration() -> None:
    [spec] = EXTRAS["all"]
    wanted = set(re.search(r"\[(.*)\]", spec).group(1).split(","))  # type: ignore[union-attr]
    # peers: other libraries, for the comparison benchmark only (benchmarks/peers.py)
    assert wanted == set(EXTRAS) - {"all", "docs", "test", "dev", "peers"}
    assert "fastapi" in wanted


def test_redis_is_bounded_to_the_tested_major_version() -> None:
    [spec] = EXTRAS["redis"]
    match = re.fullmatch(r"redis\[hiredis\]>=(\d+)\.(\d+),<(\d+)", spec)
    assert match, spec
    low, high = int(match.group(1)), int(match.group(3))
    installed = importlib.metadata.version("redis")
    major = int(installed.split(".")[0])
    assert low <= major < high, installed


def test_docs_extra_has_the_signature_formatter_and_notebook_renderer() -> None:
    names = {re.split(r"[<>=\[]", spec)[0] for spec in EXTRAS["docs"]}
    assert {"black", "mkdocs-jupyter"} <= names
