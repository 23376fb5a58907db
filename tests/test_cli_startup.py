"""The CLI shell: `--help`/`--version` without torch or onnx, `--debug` before or after the subcommand, Ctrl-C
during the first seconds (the heavy imports) as one line and exit 130."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vizcore.cli import main

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "onnx", "onnxruntime", "onnx2torch", "numpy", "PIL")
PROBE = """
import json, sys
from vizcore.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
heavy = set(HEAVY)
print(json.dumps({"code": code, "loaded": sorted({m.split('.')[0] for m in sys.modules} & heavy)}), file=sys.stderr)
""".replace("HEAVY", repr(HEAVY))


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "VIZCORE_DISABLE_PLUGIN_AUTOLOAD": "1"}


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["inspect", "--help"], ["render", "--help"]])
def test_help_and_version_import_neither_torch_nor_onnx(argv):
    p = subprocess.run([sys.executable, "-c", PROBE, *argv], cwd=ROOT, env=_env(), capture_output=True, text=True,
                       timeout=60)
    info = json.loads(p.stderr.strip().splitlines()[-1])
    assert info["code"] == 0 and info["loaded"] == [], info
    assert ("vizcore 0." in p.stdout) if argv == ["--version"] else ("usage: vizcore" in p.stdout)


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_before_or_after_the_subcommand(tmp_path, capsys, where):
    missing = str(tmp_path / "absent.onnx")
    argv = ["--debug", "inspect", missing] if where == "before" else ["inspect", missing, "--debug"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "not found" in err
    assert main(["inspect", missing]) == 2
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize("command", ["inspect", "render", "check", "diff", "report", "plugins"])
def test_every_subcommand_lists_debug(capsys, command):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    assert "--debug" in capsys.readouterr().out


def test_ctrl_c_during_the_imports_is_one_line_and_exit_130(tmp_path):
    """SIGINT right after the process starts main (torch and onnx are still importing: they take seconds)."""
    model = tmp_path / "m.onnx"
    model.write_bytes(b"not loaded: the interrupt comes first")
    code = ("import sys; import vizcore.cli as c; sys.stderr.write('ready\\n'); sys.stderr.flush(); "
            f"sys.exit(c.main(['inspect', {str(model)!r}]))")
    # SIGINT back to its default in the child: a parent started with `&` by a non-interactive shell ignores it, the
    # child inherits that, and Python then installs no KeyboardInterrupt handler (the process ran on to exit 2)
    p = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=_env(), stderr=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert p.stderr.readline().strip() == "ready"
    time.sleep(0.3)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert err.strip().splitlines() == ["vizcore: interrupted"]


@pytest.mark.parametrize("argv", [["inspect", "missing.onnx"], ["render", "nope/m.onnx", "0:0", "--out", "o"],
                                  ["diff", "old.onnx", "new.onnx"]])
def test_a_mistyped_path_is_answered_before_the_heavy_imports(argv):
    p = subprocess.run([sys.executable, "-c", PROBE, *argv], cwd=ROOT, env=_env(), capture_output=True, text=True,
                       timeout=60)
    info = json.loads(p.stderr.strip().splitlines()[-1])
    assert info["code"] == 2 and info["loaded"] == [], info
    assert "not found" in p.stderr
