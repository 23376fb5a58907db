"""Where a pruned model goes: the output path checked before any work, onnx.checker (full check), an atomic write."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import onnx

from ..errors import OptionError, OutputError


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
    return p


def checker(pruned: onnx.ModelProto) -> None:
    try:
        onnx.checker.check_model(pruned, full_check=True)
    except Exception as exc:  # a bug in the surgery, not the user's fault: say so plainly
        raise RuntimeError(f"the pruned graph fails onnx.checker: {exc}") from exc


def write(model: onnx.ModelProto, path: Path, external: bool, force: bool) -> None:
    """Write atomically (a temporary file and a rename); weights go to `NAME.data` when the input had external data."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.") as tmp:
        tmp_model = Path(tmp) / path.name
        try:
            if external:
                onnx.save_model(model, str(tmp_model), save_as_external_data=True, all_tensors_to_one_file=True,
                                location=path.name + ".data", size_threshold=1024)
                data = Path(tmp) / (path.name + ".data")
                if data.exists():
                    os.replace(data, path.parent / data.name)
            else:
                onnx.save_model(model, str(tmp_model))
            if path.exists() and not force:
                raise OutputError(f"{path} appeared while pruning", "pass --force to replace it")
            os.replace(tmp_model, path)
        except OSError as exc:
            raise OutputError(f"cannot write {path}: {exc.strerror or exc}", "choose a writable --out") from exc
