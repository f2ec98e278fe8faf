"""What `pip install` puts into site-packages: passflow's packages only (the Prefect entrypoint
folders install as passflow.flows / passflow.tasks / passflow.deployments), and every package folder."""

from __future__ import annotations

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _setuptools() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_every_package_folder_is_installed() -> None:
    listed = set(_setuptools()["packages"])
    mapped = {pkg: REPO / folder for pkg, folder in _setuptools()["package-dir"].items()}
    found = {
        ".".join(d.relative_to(REPO).parts)
        for d in (REPO / "passflow").rglob("*")
        if d.is_dir() and "__pycache__" not in d.parts and any(d.glob("*.py"))
    } | {"passflow"}
    assert found | set(mapped) == listed, f"missing from pyproject: {found - listed}; stale: {listed - found - set(mapped)}"
    for folder in mapped.values():
        assert (folder / "__init__.py").exists()


def test_no_generic_top_level_packages() -> None:
    assert all(p == "passflow" or p.startswith("passflow.") for p in _setuptools()["packages"])
