"""`--data` on `render`: the exemplar pass behind the rendered units (`vizcore.evidence.attach_exemplars`), with a
progress bar. Light at import (numpy and torch are imported when it runs), as every command module is."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from rich.console import Console

EXEMPLARS_HELP = ("also find each rendered unit's top 9 inputs in your data (exemplars: listed per unit in "
                  "manifest.json, their crops in NAME_exemplars.png); the pass is cached in ~/.cache/vizcore/exemplars "
                  "(XDG_CACHE_HOME) and a killed one resumes")


def open_data(path: str | os.PathLike[str], shape: Sequence[int]) -> Any:
    """The `--data` folder opened for a streamed pass (one-line errors before any work)."""
    from ..samples import open_data as open_

    return open_(path, shape, stream=True)


def add_exemplars(result: Any, model: Any, data: Any, opts: Any, err: Console, quiet: bool) -> Any:
    """Attach the exemplars of `result`'s units found in `data`, showing progress on `err`."""
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from ..evidence import attach_exemplars

    bar = Progress(TextColumn("exemplars"), BarColumn(), MofNCompleteColumn(), TextColumn("inputs"),
                   TimeRemainingColumn(elapsed_when_finished=True), console=err, disable=quiet, transient=False)
    task = bar.add_task("exemplars", total=data.count)
    with bar:
        ex = attach_exemplars(result, model, data, size=opts.size, preprocess=opts.preprocess,
                              value_range=opts.value_range,
                              progress=lambda done, total: bar.update(task, completed=done, total=total))
        bar.update(task, completed=data.count)
    if ex is None:
        err.print("[yellow]warning:[/] --data: no rendered unit has a layer and channel; no exemplars",
                  highlight=False)
    elif not quiet:
        again = f", {ex.resumed} from the cache" if ex.resumed else ""
        err.print(f"exemplars: {ex.count} inputs from {escape(str(data.path))}{again}", highlight=False)
    return ex


def add_trust(result: Any, model: Any, ex: Any, args: Any, err: Console) -> None:
    """The trust verdicts of `result`'s units (`vizcore.trust`), with one summary line on `err`."""
    from collections import Counter

    from ..evidence import trust

    found = trust(result, model, exemplars=ex, mode=args.trust, transfer=args.transfer, plugins=args.plugins)
    counts = Counter(t.verdict for t in found if t is not None)
    if not args.quiet and counts:
        parts = ", ".join(f"{counts[v]} {v}" for v in ("trusted", "doubtful", "misleading") if counts[v])
        more = "" if ex is not None else " (without --data: activation ratio and path similarity not measured)"
        err.print(f"trust: {parts} in {result.timings['trust']:.1f} s{more}", highlight=False)
