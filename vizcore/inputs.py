"""Checks on the files a user hands in, before any work: readable regular files, bounded reads, contained paths.

Every command calls `require_readable` on each input before it loads anything; model loading reads through
`read_regular` (no FIFO that hangs, no device that streams forever, no file larger than protobuf can parse).
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from .errors import ModelLoadError, VizcoreError
from .text import printable

#: Protobuf cannot parse a message of 2 GiB or more: a larger .onnx file is refused before it is read.
MAX_MODEL_BYTES = 2**31 - 1
#: Longest path accepted (Linux PATH_MAX is 4096; a longer one is an error, not an OSError traceback).
MAX_PATH_CHARS = 4096


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def require_readable(path: str | os.PathLike[str], what: str = "model file",
                     error: type[VizcoreError] = ModelLoadError) -> Path:
    """`path` as a Path if it is an existing, readable regular file; else `error` with a one-line message."""
    text = os.fspath(path)
    shown = printable(text if len(text) <= 200 else text[:100] + "…" + text[-60:])
    if "\0" in text:
        raise error(f"{what} path {shown} contains a NUL byte", "check the path")
    if len(text) > MAX_PATH_CHARS:
        raise error(f"{what} path is {len(text):,} characters long (at most {MAX_PATH_CHARS}): {shown}",
                    "check the path")
    try:
        st = os.stat(text)
    except FileNotFoundError:
        raise error(f"{what} not found: {shown}", "check the path") from None
    except OSError as exc:
        reason = "a path component is too long" if exc.errno == errno.ENAMETOOLONG else exc.strerror or str(exc)
        raise error(f"cannot open {what} {shown}: {reason}", "check the path") from None
    if stat.S_ISDIR(st.st_mode):
        raise error(f"{shown} is a folder, not a {what}", "pass the file inside it")
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{shown} is {_kind(st.st_mode)}, not a {what}", "pass a regular file")
    if not os.access(text, os.R_OK):
        raise error(f"cannot read {what} {shown}: permission denied", "check the file's permissions")
    return Path(text)


def read_regular(path: Path, limit: int | None = None, what: str = "model file") -> bytes:
    """The bytes of a regular file of at most `limit` bytes (default MAX_MODEL_BYTES); checked on the open
    descriptor (no race with a swap)."""
    limit = MAX_MODEL_BYTES if limit is None else limit

    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise ModelLoadError(f"cannot read {printable(str(path))}: {exc.strerror or exc}",
                             "check the file's permissions") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ModelLoadError(f"{printable(str(path))} is {_kind(st.st_mode)}, not a {what}", "pass a regular file")
        if st.st_size > limit:
            raise ModelLoadError(f"{printable(path.name)} is {st.st_size:,} bytes: larger than a {what} can be "
                                 f"({limit:,} bytes at most)", "keep large weights as external data")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ModelLoadError(f"{printable(path.name)} grew past {limit:,} bytes while it was read", "try again")
    return data


def contained(base: Path, location: str, owner: str, model: str) -> Path:
    """The regular file `base/location` for an external-data reference; refuse anything that leaves `base`.

    The same rule as onnxruntime's ("escapes model directory"): relative, no NUL, symlinks resolved inside `base`.
    """
    shown = printable(location if len(location) <= 120 else location[:60] + "…" + location[-40:])
    who = f"{model}: {owner}"
    if not location:
        raise ModelLoadError(f"{who} has external data without a location", "re-export the model")
    if "\0" in location or len(location) > MAX_PATH_CHARS:
        raise ModelLoadError(f"{who} has an invalid external-data location {shown} "
                             f"({'a NUL byte' if chr(0) in location else f'{len(location):,} characters'})",
                             "re-export the model")
    if os.path.isabs(location):
        raise ModelLoadError(f"{who} points at external data {shown} outside the model's folder; refusing to "
                             "read it", "keep the .data file next to the model")
    try:
        target = (base / location).resolve()
        st = os.stat(target) if target.exists() else None
    except OSError as exc:
        reason = "a path component is too long" if exc.errno == errno.ENAMETOOLONG else exc.strerror or str(exc)
        raise ModelLoadError(f"{who} has an unusable external-data location {shown}: {reason}",
                             "re-export the model") from None
    if target != base and base not in target.parents:
        raise ModelLoadError(f"{who} points at external data {shown} outside the model's folder; refusing to "
                             "read it", "keep the .data file next to the model")
    if st is None:
        raise ModelLoadError(f"{model}: external data file {shown} is missing (needed by {owner})",
                             f"put {shown} next to {model}")
    if not stat.S_ISREG(st.st_mode):
        raise ModelLoadError(f"{who}: external data {shown} is {_kind(st.st_mode)}", "pass a regular file")
    return target
