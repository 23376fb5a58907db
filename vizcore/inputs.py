"""The files a user hands in, checked before any work, and the one reader of each kind of small file: readable
regular files, bounded reads, contained paths; JSON (reports, caches, labels), TOML (configs) and `.npy` arrays
(feeds, data) with their size, nesting, number and dtype rules.

Every command calls `require_readable` on each input before it loads anything; model loading reads through
`read_regular` (no FIFO that hangs, no device that streams forever, no file larger than protobuf can parse).
Images are read by `vizcore.samples`, ONNX models by `vizcore.onnxfile`; nothing else opens a user's file.
"""

from __future__ import annotations

import errno
import json
import math
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ModelLoadError, OptionError, VizcoreError, oneline
from .text import printable

if TYPE_CHECKING:
    import numpy as np

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


def read_regular(path: Path, limit: int | None = None, what: str = "model file",
                 error: type[VizcoreError] = ModelLoadError) -> bytes:
    """The bytes of a regular file of at most `limit` bytes (default MAX_MODEL_BYTES); checked on the open
    descriptor (no race with a swap)."""
    limit = MAX_MODEL_BYTES if limit is None else limit

    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise error(f"cannot read {printable(str(path))}: {exc.strerror or exc}",
                    "check the file's permissions") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise error(f"{printable(str(path))} is {_kind(st.st_mode)}, not a {what}", "pass a regular file")
        if st.st_size > limit:
            raise error(f"{printable(path.name)} is {st.st_size:,} bytes: larger than a {what} can be "
                        f"({limit:,} bytes at most)", "keep large weights as external data" if error is
                        ModelLoadError else f"pass a smaller {what}")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise error(f"{printable(path.name)} grew past {limit:,} bytes while it was read", "try again")
    return data


#: Largest JSON or TOML file a command reads (a check report, a config, a cache record, labels).
MAX_TEXT_BYTES = 64 * 2**20


def read_text(path: str | os.PathLike[str], what: str, limit: int = MAX_TEXT_BYTES) -> str:
    """A small UTF-8 text file the user hands in (regular, at most `limit` bytes); OptionError, one line."""
    p = require_readable(path, what, OptionError)
    data = read_regular(p, limit, what, OptionError)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise OptionError(f"{what} {printable(p.name)} is not UTF-8 text ({exc.reason} at byte {exc.start})",
                          f"pass a {what} written by vizcore or a text editor") from None


def _finite(text: str) -> float:
    v = float(text)
    if not math.isfinite(v):
        raise ValueError(f"number {text} is out of range")
    return v


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_json(text: str, what: str) -> Any:
    """JSON text -> value; NaN, Infinity, numbers that overflow and nesting Python cannot follow are one-line
    OptionErrors (vizcore writes non-finite values as the strings "nan", "inf")."""
    try:
        return json.loads(text, parse_float=_finite, parse_constant=_no_constant)
    except RecursionError:
        raise OptionError(f"{what} is nested too deeply to read", f"pass a {what} written by vizcore") from None
    except ValueError as exc:
        raise OptionError(f"{what} is not valid JSON: {oneline(exc, 160, typed=False)}",
                          f"pass a {what} written by vizcore") from None


def read_json(path: str | os.PathLike[str], what: str, limit: int = MAX_TEXT_BYTES) -> Any:
    """The value of a JSON file the user hands in (`read_text`, then `parse_json`)."""
    return parse_json(read_text(path, what, limit), f"{what} {printable(Path(path).name)}")


def read_toml(path: str | os.PathLike[str], what: str = "config file") -> dict[str, Any]:
    """The table of a TOML file (`read_text`, then `parse_toml`)."""
    return parse_toml(read_text(path, what), f"{what} {printable(str(path))}")


def parse_toml(text: str, what: str) -> dict[str, Any]:
    """TOML text -> its table; bad syntax and nesting Python cannot follow are one-line OptionErrors."""
    try:
        import tomllib as toml
    except ModuleNotFoundError:  # pragma: no cover - Python 3.10
        try:
            import tomli as toml  # type: ignore[no-redef]
        except ModuleNotFoundError:
            raise OptionError("reading TOML files needs Python >= 3.11 or the tomli package",
                              "pip install tomli, or pass the settings as options") from None
    try:
        return toml.loads(text)
    except RecursionError:
        raise OptionError(f"{what} is nested too deeply to read", "fix the file or pass --config") from None
    except toml.TOMLDecodeError as exc:
        raise OptionError(f"{what} is not valid TOML: {oneline(exc, 160, typed=False)}",
                          "fix the file or pass --config") from None


#: Largest array a `.npy` feed or data file may declare (values): 256 Mi (1 GiB of float32).
MAX_NPY_VALUES = 1 << 28


def open_npy(path: str | os.PathLike[str], what: str, max_values: int = MAX_NPY_VALUES,
             mmap: bool = False) -> np.ndarray:
    """A `.npy` array the user hands in: a regular file, its header read first (a real-number dtype, at most
    `max_values` values, no pickled objects), then loaded, or memory-mapped with `mmap`."""
    import numpy as np

    p = require_readable(path, what, OptionError)
    name = printable(p.name)
    try:
        with open(p, "rb") as f:
            version = np.lib.format.read_magic(f)
            header = {(1, 0): np.lib.format.read_array_header_1_0,
                      (2, 0): np.lib.format.read_array_header_2_0}.get(version)
            if header is None:
                raise ValueError(f"format version {version} is not supported")
            shape, _, dtype = header(f)
    except (OSError, ValueError, EOFError, SyntaxError) as exc:
        raise OptionError(f"{what} {name} is not a .npy array: {oneline(exc, 160, typed=False)}",
                          "save it with numpy.save (no pickled objects)") from None
    if not np.issubdtype(dtype, np.number) or np.issubdtype(dtype, np.complexfloating):
        raise OptionError(f"{what} {name} holds {dtype} values, not real numbers", "save a numeric array")
    n = math.prod(int(d) for d in shape)
    if n > max_values:
        raise OptionError(f"{what} {name} declares {n:,} values (shape {list(shape)}), more than {max_values:,}",
                          "pass a smaller array")
    try:
        return np.load(p, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise OptionError(f"cannot read {what} {name}: {oneline(exc, 160, typed=False)}",
                          "is the file truncated?") from None


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


#: Largest uncompressed content of a `.npz` state file (the exemplar cache): 8 GiB.
MAX_NPZ_BYTES = 8 * 2**30


def read_npz(path: str | os.PathLike[str], what: str, max_bytes: int = MAX_NPZ_BYTES) -> dict[str, np.ndarray]:
    """Every array of a `.npz` file: a regular file whose members' uncompressed sizes add up to at most
    `max_bytes` (checked before anything is decompressed), no pickled objects."""
    import zipfile

    import numpy as np

    p = require_readable(path, what, OptionError)
    try:
        with zipfile.ZipFile(p) as zf:
            total = sum(i.file_size for i in zf.infolist())
        if total > max_bytes:
            raise OptionError(f"{what} {printable(p.name)} unpacks to {total:,} bytes, more than {max_bytes:,}")
        with np.load(p, allow_pickle=False) as z:
            return {name: z[name] for name in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise OptionError(f"cannot read {what} {printable(p.name)}: {oneline(exc, 160, typed=False)}") from None

