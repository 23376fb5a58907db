"""The command line: parse, call the public API, print with rich, map errors to exit codes.

Each subcommand lives in `vizcore/commands/NAME.py` with `add_parser(subparsers)` and `run(args, console) -> int`;
command modules import torch/onnx inside `run`, so `vizcore --help` and `--version` load neither.
Exit codes: 0 success, 1 a check failed (check/diff), 2 a usage, model or input error, 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from typing import Any

from ._version import __version__

COMMANDS = ("inspect", "render", "check", "diff", "report", "plugins", "prune", "explain")


def _common() -> argparse.ArgumentParser:
    """Options every subcommand also accepts after its name (`vizcore inspect M --debug`)."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("general")
    # SUPPRESS: a subcommand that is not given --debug keeps the value parsed before it
    g.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks for errors")
    return p


class _WithCommon:
    """The subparsers action, handing the shared options to every subcommand's parser."""

    def __init__(self, sub: Any, common: argparse.ArgumentParser) -> None:
        self._sub, self._common = sub, common

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        kwargs["parents"] = [*kwargs.get("parents", []), self._common]
        return self._sub.add_parser(name, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sub, name)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand that is installed."""
    p = argparse.ArgumentParser(prog="vizcore", description="Feature visualization for any ONNX model.")
    p.add_argument("--version", action="version", version=f"vizcore {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    p.add_argument("--strict", action="store_true", help="a plugin that fails to load or raises is fatal")
    p.add_argument("--disable-plugin", action="append", default=[], metavar="NAME",
                   help="do not load this plugin (repeatable); VIZCORE_DISABLE_PLUGIN_AUTOLOAD=1 skips all")
    sub = _WithCommon(p.add_subparsers(dest="command", metavar="COMMAND"), _common())
    for name in COMMANDS:
        try:
            mod = importlib.import_module(f"vizcore.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"vizcore.commands.{name}":
                continue
            raise
        sp = mod.add_parser(sub)
        sp.set_defaults(_run=mod.run)
    return p


def _show_warning(err: Any) -> Any:
    """Python warnings as one `warning:` line on stderr (model-supplied text escaped), not file:line source."""
    from rich.markup import escape

    from .text import printable

    def show(message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
        err.print(f"[yellow]warning:[/] {escape(printable(message))}", highlight=False, soft_wrap=True)

    return show


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `vizcore` console script; returns the exit code."""
    # everything, the imports of rich, torch and onnx included, runs inside this try: Ctrl-C at any moment
    # is one line and exit 130, never a KeyboardInterrupt traceback
    try:
        return _main(argv)
    except KeyboardInterrupt:
        try:
            sys.stderr.write("vizcore: interrupted\n")
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        return 130


def _inputs_exist(args: argparse.Namespace) -> None:
    """The model (or diff's two sides) must be readable files: checked here, first, for every command (the commands
    do not check again), in a fraction of a second, before torch and the plugins are imported."""
    from .inputs import require_readable

    for name in ("model", "old", "new"):
        path = getattr(args, name, None)
        if isinstance(path, str):
            require_readable(path, "report file" if path.lower().endswith(".json") else "model file")


def _main(argv: Sequence[str] | None) -> int:
    import warnings

    from rich.console import Console
    from rich.markup import escape

    from .errors import VizcoreError
    from .text import printable

    console = Console()
    err = Console(stderr=True)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning(err)
            _inputs_exist(args)  # a mistyped path is answered before torch and the plugins are imported
            from . import plugins

            env = plugins.Settings.from_env()
            args.plugins = plugins.Manager(plugins.Settings(autoload=env.autoload,
                                                            disabled=env.disabled | frozenset(args.disable_plugin),
                                                            strict=env.strict or args.strict))
            return int(args._run(args, console) or 0)
    except VizcoreError as exc:
        if args.debug:
            err.print_exception()
        hint = f"\n  [dim]{escape(printable(exc.hint))}[/]" if exc.hint else ""
        err.print(f"[bold red]error:[/] {escape(printable(exc.message))}{hint}",
                  highlight=False, markup=True, soft_wrap=True)
        return exc.exit_code
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
