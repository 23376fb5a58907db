"""Taking an output folder whole: everything a save writes appears at once, or nothing does.

A save writes into a fresh temporary folder first. Into a new (or empty) folder it is then renamed into place:
one atomic step, which also decides a race between two renders (the second finds the folder taken and fails
with a one-line OutputError). With `force` into a folder that already holds files, a lock file (O_EXCL) keeps a
second writer out; the files vizcore wrote there before (the old manifest's list) are replaced, and files it did
not write are never touched. While the files move, `manifest.json` lists every file that may be there.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import OutputError, VizcoreError
from .files import atomic_write_text, check_out_dir, inside
from .inputs import read_json

MANIFEST = "manifest.json"
LOCK = ".vizcore.lock"


def write_folder(out: Path, force: bool, write: Callable[[Path], list[Path]]) -> list[Path]:
    """Run `write(folder)` into a temporary folder, then make its files appear in `out`; returns their paths there.

    Refuses (OutputError, nothing written) a path that is a file, or a non-empty folder unless `force`.
    """
    out = Path(out)
    check_out_dir(out, force)
    fresh = not out.exists() or not any(out.iterdir())
    _mkdir(out.parent if fresh else out)
    if fresh and (not out.is_dir() or os.access(out.parent, os.W_OK)):
        with _staging(out.parent, f".{out.name}.vizcore-") as tmp:
            names = _names(tmp, write(tmp))
            try:
                os.rename(tmp, out)  # atomic; onto an existing folder only if it is (still) empty
            except OSError as exc:
                raise OutputError(f"output folder {out} was written by someone else meanwhile",
                                  "choose another --out, or pass --force") from exc
        return [out / n for n in names]
    with _locked(out), _staging(out, ".vizcore-new-") as tmp:  # a folder with files, or one we cannot replace
        names = _names(tmp, write(tmp))
        _commit(out, tmp, names)
    return [out / n for n in names]


def check_creatable(out: Path) -> None:
    """An OutputError, before any work, when `out` cannot be created: a file sits where one of its folders goes."""
    for parent in Path(out).absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise OutputError(f"cannot create {out}: {parent} is a file", "choose another --out")
            return


def previous_files(out: Path) -> set[str]:
    """The files an earlier save listed in `out`'s manifest (its `files`, else its units' files and grid.png)."""
    try:
        old = read_json(out / MANIFEST, "manifest")
    except VizcoreError:
        return set()
    if not isinstance(old, dict):
        return set()
    files = old.get("files")
    if not isinstance(files, list):
        files = [u.get("file") for u in old.get("units", []) if isinstance(u, dict)] + ["grid.png"]
        files += [f[:-4] + ".npy" for f in files if isinstance(f, str) and f.endswith(".png")]
    return {f for f in files if isinstance(f, str) and f and not f.startswith(("/", "."))} | {MANIFEST}


def _commit(out: Path, tmp: Path, names: list[str]) -> None:
    """Replace what vizcore wrote before in `out` by the files in `tmp`; the manifest moves last."""
    old = previous_files(out)
    maybe = sorted((old | set(names)) - {MANIFEST})
    _journal(out, maybe)
    try:
        for name in sorted(old - set(names) - {MANIFEST}):
            path = inside(out, name)
            if path.is_file() and not path.is_symlink():
                path.unlink()
        for name in names:
            if name != MANIFEST:
                dest = inside(out, name)
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp / name, dest)
        if MANIFEST in names:
            os.replace(tmp / MANIFEST, out / MANIFEST)
    except BaseException:
        with contextlib.suppress(Exception):  # say exactly what is there now
            _journal(out, [n for n in maybe if (out / n).exists()])
        raise


def _journal(out: Path, files: list[str]) -> None:
    """A manifest for the moment files move: which files may be there (a later `--force` replaces them)."""
    atomic_write_text(out / MANIFEST, json.dumps({"complete": False, "files": files}, indent=1) + "\n")


def _names(tmp: Path, written: list[Path]) -> list[str]:
    """The written files that are inside `tmp`, relative to it (a path an exporter wrote elsewhere is not moved)."""
    return list(dict.fromkeys(relative(tmp, written)))


def relative(folder: Path, paths: list[Path]) -> list[str]:
    """`paths` inside `folder`, as POSIX paths relative to it, in order."""
    base = Path(folder).resolve()
    out = []
    for p in paths:
        q = Path(p).resolve()
        if base in q.parents:
            out.append(q.relative_to(base).as_posix())
    return out


@contextlib.contextmanager
def _staging(parent: Path, prefix: str) -> Iterator[Path]:
    """A fresh temporary folder in `parent`, removed afterwards whatever happens (it holds only our files)."""
    try:  # os.mkdir, not mkdtemp: the folder gets the user's umask (0755 for 022), as any folder they make
        tmp = Path(parent) / f"{prefix}{secrets.token_hex(6)}"
        os.mkdir(tmp)
    except OSError as exc:
        raise OutputError(f"cannot write to {parent}: {exc.strerror or exc}", "choose a writable --out folder") \
            from exc
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def _locked(out: Path) -> Iterator[None]:
    lock = out / LOCK
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError as exc:
        raise OutputError(f"another vizcore is writing into {out}",
                          f"wait for it, or remove {lock} if none is running") from exc
    except OSError as exc:
        raise OutputError(f"cannot write to {out}: {exc.strerror or exc}", "choose a writable --out folder") from exc
    try:
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        yield
    finally:
        with contextlib.suppress(OSError):
            lock.unlink()


def _mkdir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {path}: {exc.strerror or exc}", "choose a writable --out folder") from exc
