"""The README shows what the browser tests photograph."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_it_shows_every_console_screenshot():
    readme = (ROOT / "README.md").read_text()
    shots = sorted(path.name for path in (ROOT / "docs").glob("console-*.png"))
    assert shots
    assert [name for name in shots if f"](docs/{name})" not in readme] == []
