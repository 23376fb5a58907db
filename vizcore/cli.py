"""The command line: parse, call the public API, print with rich, map errors to exit codes.

Each subcommand lives in `vizcore/commands/NAME.py` with `add_parser(subparsers)` and `run(args, console) -> int`.
Exit codes: 0 success, 1 a check failed (check/diff), 2 a usage, model or input error.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from rich.console import Console
from rich.markup import escape

from ._version import __version__
from .errors import VizcoreError

COMMANDS = ("inspect", "render", "check", "diff", "report", "plugins")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand that is installed."""
    p = argparse.ArgumentParser(prog="vizcore", description="Feature visualization for any ONNX model.")
    p.add_argument("--version", action="version", version=f"vizcore {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    p.add_argument("--strict", action="store_true", help="a plugin that fails to load or raises is fatal")
    p.add_argument("--disable-plugin", action="append", default=[], metavar="NAME",
                   help="do not load this plugin (repeatable); VIZCORE_DISABLE_PLUGIN_AUTOLOAD=1 skips all")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
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




def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `vizcore` console script; returns the exit code."""
    console = Console()
    err = Console(stderr=True)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        from . import plugins

        env = plugins.Settings.from_env()
        args.plugins = plugins.Manager(plugins.Settings(autoload=env.autoload,
                                                        disabled=env.disabled | frozenset(args.disable_plugin),
                                                        strict=env.strict or args.strict))
        return int(args._run(args, console) or 0)
    except VizcoreError as exc:
        if args.debug:
            err.print_exception()
        hint = f"\n  [dim]{escape(exc.hint)}[/]" if exc.hint else ""
        err.print(f"[bold red]error:[/] {escape(exc.message)}{hint}",
                  highlight=False, markup=True, soft_wrap=True)
        return exc.exit_code
    except KeyboardInterrupt:
        err.print("[red]interrupted[/]")
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
