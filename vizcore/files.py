"""Safe file output: atomic writes, refusing to overwrite, and file names made from untrusted model names."""

from __future__ import annotations

import errno
import os
import re
import secrets
import stat
from pathlib import Path

from .errors import OutputError

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(name: str, max_len: int = 80) -> str:
    """A file-name component from an untrusted string: no separators, no leading dots, never empty."""
    s = _UNSAFE.sub("_", name).strip("._-")
    s = re.sub(r"\.{2,}", ".", s)[:max_len]
    return s or "unit"


def inside(base: Path, rel: str) -> Path:
    """`base/rel`, refusing any path that would leave `base` (symlinks resolved)."""
    base = Path(base).resolve()
    p = (base / rel).resolve()
    if p != base and base not in p.parents:
        raise OutputError(f"refusing to write {rel!r}: it would leave {base}")
    return p


def _create_temp(path: Path) -> tuple[int, str]:
    """A new temporary file next to `path`, with the mode a plain `open(path, "w")` would give: 0666 less the
    umask (applied by the kernel, no umask juggling), or the mode of the file it replaces. mkstemp's 0600 is not."""
    try:
        keep = stat.S_IMODE(os.stat(path).st_mode) if path.is_file() else None
    except OSError:
        keep = None
    for _ in range(100):
        tmp = str(path.parent / f".{path.name[:200]}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
        except FileExistsError:
            continue
        if keep is not None:
            os.fchmod(fd, keep)
        return fd, tmp
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(path))


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write `data` to `path` through a temporary file in the same folder and a rename: never a half file."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = _create_temp(path)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}", "choose a writable --out folder") from exc
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    """`atomic_write_bytes` for UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def check_out_dir(out: Path, force: bool = False) -> Path:
    """Refuse an output path that is a file, or a non-empty folder unless `force`; creates nothing (commands call it
    before any work, and create the folder only when they have something to write)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputError(f"output path {out} exists and is not a folder", "choose another --out")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise OutputError(f"output folder {out} is not empty", "choose another --out, or pass --force to write into it")
    return out


def prepare_out_dir(out: Path, force: bool = False) -> Path:
    """Create the output folder; refuse a non-empty one unless `force`, and a path that is a file."""
    out = check_out_dir(out, force)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".vizcore-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OutputError(f"cannot write to {out}: {exc.strerror or exc}", "choose a writable --out folder") from exc
    return out


PathArg = str | os.PathLike[str] | None


def _exists(path: str | os.PathLike[str]) -> bool:
    """Whether a path exists; a path the system cannot even look up (too long, a NUL) does not."""
    try:
        return os.path.exists(path)
    except (OSError, ValueError):
        return False


def refuse_inputs(outputs: dict[str, PathArg], inputs: list[PathArg]) -> None:
    """Refuse, before any work, an output file (`{flag: path}`) that is one of the command's input files (the
    model, a stored report, a config): writing the report would replace it."""
    have = [Path(p) for p in inputs if p is not None and _exists(p)]
    for flag, out in outputs.items():
        if out is None or str(out) == "-" or not _exists(out):
            continue
        for src in have:
            if os.path.samefile(out, src):
                raise OutputError(f"{flag} {out} is {src.name}, an input of this command: it would be replaced",
                                  "write the report to another file")

