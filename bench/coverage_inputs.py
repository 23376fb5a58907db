"""Production input formats: does vizcore load them, match onnxruntime at batch 1 and 3, back-propagate to the
optimized input, and render (objective rises over 8 steps)? Appends a table to bench/COVERAGE.md.

    python bench/coverage_inputs.py              # prints the table
    python bench/coverage_inputs.py --write      # and appends/replaces the "production formats: inputs" section

Models: resnet18 (random weights) exported NHWC (a permute in front of the first conv, as tf2onnx writes it), the
tiny builders of tests/test_inputs.py (NHWC by onnx.helper, 1-D [N, L, 1], rank-2 MLP, LSTM, constant and
data-dependent If, a custom op after two convs, a text encoder with token ids optimized at its embedding output),
tests/test_loop.py's Loops (constant trip count with per-iteration weights and an If on the iteration number:
unrolled; a data-dependent condition: cut in front), a `quantize_dynamic` bidirectional LSTM
(tests/test_quantized_lstm.py), a voice-activity model switching on its `sr` input, specialised on
`--feed sr=16000` (tests/test_specialise.py), and the stand-ins of tests/test_inputs_prod.py (issue 25: old-IR
files, free-length (N, L, C) sequences, quantized and byte-level embeddings, two float inputs, a state input with its
batch on axis 1; command rows: `check` of a model where nothing converts, `prune` of the state model).

    python bench/coverage_inputs.py --only Loop --write   # measures only the rows whose name contains "Loop"
                                                          # and replaces (or adds) just those rows
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import test_inputs as T  # noqa: E402
import test_inputs_prod as P  # noqa: E402
import test_long_signal as LS  # noqa: E402
import test_loop as L  # noqa: E402
import test_quantized_lstm as Q  # noqa: E402
import test_specialise as S  # noqa: E402
from conftest import ort_run  # noqa: E402
from tiny import export_text, gather_output  # noqa: E402

import vizcore  # noqa: E402
from vizcore.analysis.fidelity import fidelity  # noqa: E402

TOLERANCE = 1e-3  # max |torch - onnxruntime| / max |onnxruntime|
GOAL = (f"parity <= {TOLERANCE:g} at batch 1 and 3, gradient finite and non-zero, 8-step render rises, "
        "`vizcore check` exits 0 or 1")


def resnet_nhwc(path: Path) -> Path:
    import torchvision

    class NHWC(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.net = torchvision.models.resnet18().eval()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x.permute(0, 3, 1, 2))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(NHWC().eval(), (torch.rand(1, 64, 64, 3),), str(path), dynamo=False, opset_version=17,
                          input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "N", 1: "H", 2: "W"}})
    return path


def _line(path: Path) -> Path:
    from test_render_shapes import Line

    return T._export(Line(), path, (1, 3, 16, 48), {0: "N", 3: "W"})


def _rel(model: vizcore.Model, batch: int, size: int | None) -> float | None:
    """max |torch - ort| / max |ort|, or None when it cannot be measured (shown "not measured", never inf)."""
    fid = fidelity(model, batch=batch, size=size, seed=batch)
    if not fid.get("available") or fid.get("error"):
        return None
    x = model.probe_input(1, size) if model.source is None else None
    scale = 1.0
    if x is not None:
        src = onnx.load_from_string(model.reference) if model.reference else model.path
        ref = ort_run(src, {model.input.name: model.feeds(x)[0].numpy()}
                      ) if len(model.inputs) == 1 else None
        scale = max(float(np.abs(ref[0]).max()), 1e-12) if ref else 1.0
    return fid["max_abs_diff"] / scale


def _check(path: Path, size: int | None, load: dict[str, object]) -> int:
    """`vizcore check` on the model as a user would run it (with the same input flags): its exit code (goal 0 or 1;
    2 is a usage/model error, anything else a crash)."""
    import contextlib
    import io

    from vizcore.cli import main

    args = ["check", str(path), "-q"] + (["--size", str(size)] if size else [])
    args += ["--input-node", str(load["input"])] if load.get("input") else []
    for k, v in (load.get("feeds") or {}).items():  # scalar feeds only (a sample rate): --feed NAME=NUMBER
        args += ["--feed", f"{k}={v}"]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            return int(main(args))
        except BaseException:  # noqa: BLE001  a traceback is what this column exists to catch
            return -1


def case(name: str, path: Path, **load: object) -> dict[str, object]:
    t0 = time.perf_counter()
    size = load.pop("size", None)
    try:
        m = vizcore.load(path, size=size, **load)
    except vizcore.errors.VizcoreError as exc:
        return {"name": name, "result": f"refused: {exc.message[:80]}"}
    rel1, rel3 = _rel(m, 1, size), _rel(m, 3, size)
    target = [l for l in m.layers if l.op_type in ("Conv", "Gemm", "MatMul") and m.depends_on_input(l)][-1]
    x = m.probe_input(1, size).requires_grad_(True)
    m.cut_at([target])(*m.feeds(x))[0].sum().backward()
    grad = bool(torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        best = None
        for ch in range(min(3, target.channels or 1)):
            r = vizcore.render(m, f"{target.name}:{ch}", steps=8, size=size, device="cpu", transforms="none",
                               record_every=1)
            rise = r.traces[0][-1] - r.traces[0][0]
            best = rise if best is None else max(best, rise)
    check = _check(path, size, load)
    ok = all(r is not None and r <= TOLERANCE for r in (rel1, rel3)) and grad and best > 0 and check in (0, 1)
    return {"name": name, "check": check, "rendered": "x".join(map(str, r.images.shape[1:-1])),
            "layout": m.layout.name if m.layout else "-", "shape": list(m.input_shape(1, size)),
            "rel1": rel1, "rel3": rel3, "grad": grad, "rise": best, "layers": len(m.layers),
            "unreachable": len(m.unreachable), "result": "ok" if ok else "FAIL",
            "seconds": time.perf_counter() - t0}


def _issue25_rows(tmp: Path, save: Callable[[onnx.ModelProto, str], Path]
                  ) -> list[tuple[str, Callable[[], Path], dict[str, object]]]:
    """The stand-ins of issue 25 (tests/test_inputs_prod.py), measured like every other row."""
    return [
        ("old IR 3 / opset 8, initializers not graph inputs (repaired)", lambda: save(P.old_ir(False), "ir3.onnx"),
         {}),
        ("old IR 3 / opset 8, initializers listed as inputs", lambda: save(P.old_ir(True), "ir3l.onnx"), {}),
        ("decoder [1, S, 16], Mul first (NLC, length chosen)",
         lambda: T.export(P.Decoder(), tmp / "dec.onnx", (1, 10, 16), metadata=T.META, axes={1: "S"}), {}),
        ("batch-first LSTM [batch, time, 16] + states [2, batch, 8]",
         lambda: P.export_recurrent(tmp / "rnn.onnx"), {}),
        ("uint8 embedding -> DequantizeLinear, int64 ids, input = auto",
         lambda: save(P.quantized_embedding(), "qemb.onnx"), {"size": 10, "input": "auto"}),
        ("int8 embedding, int32 ids, input = the integer lookup",
         lambda: save(P.quantized_embedding(onnx.TensorProto.INT32, signed=True), "qemb8.onnx"),
         {"size": 10, "input": "q"}),
        ("byte classifier, int32 ids and a Shape, input = auto",
         lambda: save(P.byte_classifier(), "bytes.onnx"), {"size": 10, "input": "auto"}),
        ("speech encoder, 2 float inputs (the convs' input chosen)",
         lambda: save(P.speech_encoder(), "speech.onnx"), {"size": 24}),
        ("state input [3, batch, 5] (batch on axis 1)", lambda: save(P.state_model(), "state.onnx"), {}),
    ]


def _command_rows(tmp: Path, save: Callable[[onnx.ModelProto, str], Path]
                  ) -> list[tuple[str, Callable[[], Path], list[str], int]]:
    """(row name, model builder, command and flags, the exit code wanted): a command run on a stand-in."""
    return [("custom op only: check fails, nothing could be checked", lambda: save(P.custom_only(), "empty.onnx"),
            ["check", "-q"], 1),
           ("custom op only: --allow-empty passes", lambda: save(P.custom_only(), "empty.onnx"),
            ["check", "-q", "--allow-empty"], 0),
           ("prune, state input [3, batch, 5]: verified in onnxruntime", lambda: save(P.state_model(), "st.onnx"),
            ["prune", "--out", str(tmp / "pruned.onnx"), "--force"], 0)]


def cases(tmp: Path) -> list[tuple[str, Callable[[], dict[str, object]]]]:
    """(row name, what measures it), so that `--only` builds and measures only the rows it names."""
    def save(model: onnx.ModelProto, name: str) -> Path:
        p = tmp / name
        onnx.save(model, str(p))
        return p

    def text() -> Path:
        return export_text(tmp / "text.onnx")

    rows: list[tuple[str, Callable[[], Path], dict[str, object]]] = [
        ("resnet18 NHWC (torch permute, symbolic H, W)", lambda: resnet_nhwc(tmp / "r18.onnx"), {"size": 64}),
        ("NHWC, tf-like Transpose in front of Conv", lambda: save(T.nhwc_model(), "nhwc.onnx"), {}),
        ("NHWC fixed non-square 12x20", lambda: save(T.nhwc_model(batch=1, h=12, w=20), "wide.onnx"), {}),
        ("1-D [N, L, 1] conv net", lambda: T._export(T.Signal(), tmp / "sig.onnx", (1, 40, 1), {0: "N", 1: "L"}), {}),
        ("1-D [N, 20000, 1] audio, strided front end, logits ~1e-5",
         lambda: T._export(LS.Audio(), tmp / "long.onnx", (1, LS.LENGTH, 1), {0: "N"}), {}),
        ("rank-2 (N, F) MLP", lambda: T._export(T.MLP(), tmp / "mlp.onnx", (1, 16), {0: "N"}), {}),
        ("emb [1, S, 'hidden'] (hidden from weights)", lambda: save(T.emb_model(), "emb.onnx"), {"size": 10}),
        ("LSTM, outputs Y_h, conv, Y", lambda: save(T.lstm_model(), "lstm.onnx"), {"size": 12}),
        ("If, constant condition (inlined)", lambda: save(T.if_model(True), "ifc.onnx"), {}),
        ("If, data-dependent (cut in front)", lambda: save(T.if_model(False), "ifd.onnx"), {}),
        ("control flow: Loop with constant trip count (unrolled)",
         lambda: save(L.loop_model("iteration"), "loopc.onnx"), {}),
        ("control flow: Loop, data-dependent condition (cut in front)",
         lambda: save(L.loop_model("data_cond"), "loopd.onnx"), {}),
        ("custom op after two convs (cut in front)", lambda: save(T.custom_after_convs(), "custom.onnx"), {"size": 16}),
        ("text encoder, int64 ids, input = embedding output", text, {"size": 10, "input": "embedding output"}),
        ("OCR line, fixed height 16, free width", lambda: _line(tmp / "line.onnx"), {"size": 40}),
        ("quantize_dynamic bidirectional LSTM (com.microsoft DynamicQuantizeLSTM)",
         lambda: Q.quantized_bilstm(tmp, per_channel=True), {"size": 16}),
        ("VAD switching on its sr input (--feed sr=16000: Ifs folded)", lambda: save(S.vad_model(), "vad.onnx"),
         {"feeds": {"sr": 16000}}),
        *_issue25_rows(tmp, save),
    ]

    def measure(name: str, build: Callable[[], Path], load: dict[str, object]) -> dict[str, object]:
        path = build()
        if load.get("input") == "embedding output":
            load = {**load, "input": gather_output(path)}
        return case(name, path, **load)

    cli = _command_rows(tmp, save)
    return ([(name, lambda n=name, b=build, kw=kw: measure(n, b, kw)) for name, build, kw in rows]
            + [(name, lambda n=name, b=build, a=args, w=want: command(n, b(), a, w))
               for name, build, args, want in cli])


def command(name: str, path: Path, args: list[str], want: int) -> dict[str, object]:
    """A row that runs one command on a stand-in: ok when it exits `want` without a traceback."""
    import contextlib
    import io

    from vizcore.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            code = int(main([args[0], str(path), *args[1:]]))
        except BaseException:  # noqa: BLE001  a traceback is what this row exists to catch
            code = -1
    ok = code == want and "Traceback" not in err.getvalue()
    return {"name": name, "exit": code, "result": "ok" if ok else "FAIL"}


def _shown(rel: float | None) -> str:
    return "not measured" if rel is None else f"{rel:.0e}"


def table(rows: list[dict[str, object]], seconds: float) -> str:
    lines = ["## production formats: inputs", "",
             f"Generated by `python bench/coverage_inputs.py --write` in {seconds:.0f} s on this machine. "
             f"Goal per row: {GOAL}. REL = max |torch - ort| / max |ort| (the optimized input's model; for the "
             "text encoder and multi-input models the absolute difference). `cut` = nodes left out in front of an "
             "op without a converter.", "",
             "| model | layout | natural input | REL1 / REL3 | grad ≠ 0 | render rise | rendered at | check exit | "
             "layers (cut) | result |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "exit" in r:  # a command row: its exit code in the check column
            lines.append(f"| {r['name']} | - | - | - | - | - | - | {r['exit']} | - | {r['result']} |")
            continue
        if "rel1" not in r:
            lines.append(f"| {r['name']} | - | - | - | - | - | - | - | - | {r['result']} |")
            continue
        lines.append(f"| {r['name']} | {r['layout']} | {'x'.join(map(str, r['shape']))} | {_shown(r['rel1'])} / "
                     f"{_shown(r['rel3'])} | {'yes' if r['grad'] else 'no'} | {r['rise']:+.3g} | {r['rendered']} "
                     f"| {r['check']} | {r['layers']} "
                     f"({r['unreachable']}) | {r['result']} |")
    ok = sum(r["result"] == "ok" for r in rows)
    lines += ["", f"{ok}/{len(rows)} ok (goal: all)", ""]
    return "\n".join(lines)


def merge(old: str, rows: list[dict[str, object]], seconds: float) -> str:
    """The existing section with `rows` replaced in place (or added after the last row) and the ok count
    recomputed; the other rows and the header keep the figures of their own run."""
    fresh = table(rows, seconds).splitlines()
    lines = old.splitlines()
    header = next((line for line in lines if line.startswith("| model |")), None)
    if header != fresh[4]:
        raise SystemExit("bench/COVERAGE.md's table has other columns than this script writes: run it without "
                         "--only to regenerate the whole table")
    body = [i for i, line in enumerate(lines) if line.startswith("| ") and not line.startswith("| model |")]
    for r, line in zip(rows, fresh[6:6 + len(rows)]):
        at = next((i for i in body if lines[i].startswith(f"| {r['name']} |")), None)
        if at is None:
            at = body[-1] + 1
            lines.insert(at, line)
            body.append(at)
        else:
            lines[at] = line
    rows_now = [lines[i] for i in body]
    ok = sum(line.rstrip().endswith("| ok |") for line in rows_now)
    return "\n".join(f"{ok}/{len(rows_now)} ok (goal: all)" if line.endswith("ok (goal: all)") else line
                     for line in lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help="append the table to bench/COVERAGE.md")
    ap.add_argument("--only", metavar="TEXT", help="measure only the rows whose name contains TEXT")
    args = ap.parse_args()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        rows = [run() for name, run in cases(Path(d)) if args.only is None or args.only in name]
    text = table(rows, time.perf_counter() - t0)
    print(text)
    if args.write:
        path = ROOT / "bench" / "COVERAGE.md"
        old = path.read_text(encoding="utf-8")
        head, marker, section = old.partition("## production formats: inputs")
        if args.only is not None and marker:
            path.write_text(head + merge(marker + section, rows, time.perf_counter() - t0), encoding="utf-8")
        else:
            path.write_text(head.rstrip() + "\n\n" + text, encoding="utf-8")


if __name__ == "__main__":
    main()
