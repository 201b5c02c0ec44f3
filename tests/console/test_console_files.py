"""The console's static files: all shipped by the package, none missing."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STATIC = ROOT / "src" / "athena_cdc" / "console" / "static"


def test_the_package_data_ships_every_console_file() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["athena_cdc.console"]
    files = sorted(path.name for path in STATIC.iterdir())
    assert "index.html" in files
    for name in files:
        assert any(fnmatch.fnmatch(f"static/{name}", p) for p in patterns), name


def test_every_file_the_page_loads_is_there_and_nothing_comes_from_elsewhere() -> None:
    html = (STATIC / "index.html").read_text()
    loaded = re.findall(r'(?:src|href)="(/console/[^"]+)"', html)
    assert loaded and all((STATIC / url.removeprefix("/console/")).is_file() for url in loaded)
    for script in STATIC.glob("*.js"):
        text = script.read_text()
        for module in re.findall(r'from "\./([^"]+)"', text):
            assert (STATIC / module).is_file(), f"{script.name} imports {module}"
        assert "http://" not in text and "https://" not in text, script.name
    assert "http://" not in html and "https://" not in html
