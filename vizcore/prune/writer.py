"""Where a pruned model goes: the output path checked before any work, onnx.checker (full check), an atomic write."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import onnx

from ..errors import OptionError, OutputError
from ..outdir import check_creatable


def check_out(model_path, out, force: bool, dry_run: bool) -> Path | None:
    """The output path, refused before any work when it is the input or exists (without --force)."""
    if out is None:
        if not dry_run:
            raise OptionError("no output file", "pass --out SMALLER.onnx, or --dry-run to only report")
        return None
    p = Path(out)
    if p.resolve() == Path(model_path).resolve():
        raise OutputError(f"--out {p} is the input model", "the input is never overwritten; choose another --out")
    if p.exists() and not force and not dry_run:
        raise OutputError(f"{p} exists", "choose another --out, or pass --force to replace it")
    if not dry_run:
        check_creatable(p)  # a folder under a regular file: refused before any work
    return p


def full_check(model: onnx.ModelProto) -> bool:
    """Whether a graph passes onnx's checker with shape inference (the input may not: then nor can its pruning)."""
    try:
        onnx.checker.check_model(model, full_check=True)
        return True
    except Exception:  # noqa: BLE001 - onnx raises several kinds
        return False


def checker(pruned: onnx.ModelProto, full: bool = True) -> None:
    """The pruned graph passes onnx's checker at least as strictly as the original did (`full`)."""
    try:
        onnx.checker.check_model(pruned, full_check=full)
    except Exception as exc:  # a bug in the surgery, not the user's fault: say so plainly
        raise RuntimeError(f"the pruned graph fails onnx.checker: {exc}") from exc


def write(model: onnx.ModelProto, path: Path, external: bool, force: bool) -> None:
    """Write atomically (a temporary file and a rename); weights go to `NAME.data` when the input had external data.
    Neither file replaces an existing one without `force`."""
    path = Path(path)
    data_path = path.parent / (path.name + ".data")
    for target in (path, data_path) if external else (path,):
        if target.exists() and not force:
            raise OutputError(f"{target} exists", "choose another --out, or pass --force to replace it")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.") as tmp:
            tmp_model = Path(tmp) / path.name
            if external:
                onnx.save_model(model, str(tmp_model), save_as_external_data=True, all_tensors_to_one_file=True,
                                location=data_path.name, size_threshold=1024)
                data = Path(tmp) / data_path.name
                if data.exists():
                    os.replace(data, data_path)
            else:
                onnx.save_model(model, str(tmp_model))
            os.replace(tmp_model, path)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}", "choose a writable --out") from exc
