"""`vizcore plugins`: every plugin (built-in or installed), its version and source, and what it adds."""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .._version import __version__
from ..plugins import KINDS
from ..text import json_text


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("plugins", help="list plugins and what they add",
                       description="List every plugin (built-in, entry point or disabled), its version and source, "
                                   "and the objectives, params, transforms, regularizers, exporters, converters "
                                   "and pre-passes it adds.")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return p


def _compact(kind: str, names: list[str]) -> str:
    """Names for the table: converters grouped by op (`Cast@6/19`), the default ONNX domain left out."""
    if kind != "converters":
        return ", ".join(names)
    ops: dict[str, list[str]] = {}
    for key in names:
        op, _, version = key.removeprefix("ai.onnx::").rpartition("@")
        ops.setdefault(op, []).append(version)
    return ", ".join(f"{op}@{'/'.join(sorted(v, key=lambda x: int(x) if x.isdigit() else 0))}"
                     for op, v in sorted(ops.items()))


def run(args: argparse.Namespace, console: Console) -> int:
    manager = args.plugins
    infos, clashes = manager.describe()
    if args.json:
        data = {"vizcore_version": __version__, "autoload": manager.settings.autoload,
                "plugins": [i.to_json() for i in infos], "clashes": [str(c) for c in clashes]}
        text = json_text(data, indent=2)
        console.print_json(text) if console.is_terminal else print(text)
        return 2 if clashes else 0
    if not console.is_terminal:  # a pipe or a log: one line per plugin and per kind, whole (grep-able), no table
        _print_plain(infos, console)
    else:
        _print_table(infos, manager, console)
    for clash in clashes:
        console.print(f"[bold red]error:[/] {escape(clash.message)}\n  [dim]{escape(clash.hint or '')}[/]",
                      highlight=False)
    return 2 if clashes else 0


def _print_plain(infos: list[Any], console: Console) -> None:
    for info in infos:
        source = info.source if info.source == "builtin" else f"{info.source} ({info.package})"
        state = "" if info.status == "ok" else " disabled" if info.status == "disabled" else f" failed: {info.error}"
        console.print(escape(f"{info.name} {info.version} {source}{state}"), highlight=False, soft_wrap=True)
        for kind in KINDS if info.status == "ok" else ():
            if kind in info.adds:
                console.print(escape(f"  {kind}: {_compact(kind, info.adds[kind])}"), highlight=False,
                              soft_wrap=True)


def _print_table(infos: list[Any], manager: Any, console: Console) -> None:
    table = Table(title=f"{sum(i.status == 'ok' for i in infos)} plugins loaded"
                  + ("" if manager.settings.autoload else " (entry points off: VIZCORE_DISABLE_PLUGIN_AUTOLOAD)"),
                  title_justify="left")
    for col in ("name", "version", "source", "adds"):
        table.add_column(col, overflow="fold")
    for info in infos:
        source = info.source if info.source == "builtin" else f"{info.source} ({info.package})"
        if info.status == "ok":
            adds = "\n".join(f"{kind}: {_compact(kind, info.adds[kind])}" for kind in KINDS if kind in info.adds)
            table.add_row(escape(info.name), escape(info.version), escape(source), escape(adds or "-"))
        else:
            what = "disabled" if info.status == "disabled" else f"failed: {info.error}"
            table.add_row(f"[dim]{escape(info.name)}[/]", escape(info.version), escape(source),
                          f"[{'dim' if info.status == 'disabled' else 'red'}]{escape(what)}[/]")
    console.print(table)
