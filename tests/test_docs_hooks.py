"""docs/plugins.md's hook table and lifecycle list are held against the contract in vizcore/hookspecs.py."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from vizcore import hookspecs
from vizcore.plugins import KINDS

DOC = (Path(__file__).resolve().parents[1] / "docs" / "plugins.md").read_text(encoding="utf-8")


def _specs() -> dict[str, inspect.Signature]:
    return {n: inspect.signature(f) for n, f in vars(hookspecs).items()
            if n.startswith("vizcore_") and callable(f)}


def test_every_contribution_hook_is_a_row_of_the_table_with_its_kind():
    rows = dict(re.findall(r"^\| `(vizcore_add_\w+)` \| (\w+) \|", DOC, flags=re.M))
    contributions = {n for n in _specs() if n.startswith("vizcore_add_")}
    assert set(rows) == contributions
    assert {hook: kind for kind, hook in KINDS.items()} == rows


def test_every_lifecycle_hook_is_documented_with_its_arguments():
    lifecycle = {n: s for n, s in _specs().items() if not n.startswith("vizcore_add_")}
    assert lifecycle
    for name, sig in lifecycle.items():
        documented = f"`{name}({', '.join(sig.parameters)})`"
        assert documented in DOC, f"docs/plugins.md does not document {documented}"


def test_every_field_of_the_run_is_documented():
    from dataclasses import fields

    from vizcore.lifecycle import RenderRun

    missing = [f.name for f in fields(RenderRun) if f"`run.{f.name}`" not in DOC]
    assert not missing, f"docs/plugins.md does not mention {missing}"
