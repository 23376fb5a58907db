"""docs/make_pictures.sh makes README's pictures from README's own commands, verbatim."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_picture_commands_are_readmes() -> None:
    script = (ROOT / "docs" / "make_pictures.sh").read_text(encoding="utf-8")
    commands = dict(re.findall(r"^(\w+_CMD)='([^']+)'$", script, re.M))
    assert set(commands) == {"RENDER_CMD", "REPORT_CMD", "UNIT_CMD"}
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for name, cmd in commands.items():
        assert cmd in readme, f"{name} is not README's command: {cmd}"
        assert f'eval "${name}"' in script
