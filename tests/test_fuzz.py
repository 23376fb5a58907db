"""Bounded fuzzing: seeded mutants of a small valid model (tests/fuzz_mutants.py) through `vizcore.load`, through
`vizcore inspect` in-process, and a couple through a subprocess (an interpreter crash would show there as a
negative exit code). The larger campaign is bench/fuzz_campaign.py (results in bench/RESULTS.md, "fuzz")."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from collections import Counter
from pathlib import Path

import pytest
from fuzz_mutants import base_model, mutant

import vizcore
from vizcore.cli import main

ROOT = Path(__file__).resolve().parents[1]
LOAD_SEEDS = range(300)
CLI_SEEDS = range(0, 300, 12)  # 25 mutants, every 4th of them with the onnxruntime comparison


@pytest.fixture(scope="module")
def base():
    return base_model()


def _write(tmp_path: Path, seed: int, base) -> tuple[Path, str]:
    data, what = mutant(seed, base)
    path = tmp_path / f"m{seed}.onnx"
    path.write_bytes(data)
    return path, what


def test_load_raises_only_vizcore_errors(tmp_path, base):
    outcomes: Counter[str] = Counter()
    crashes = []
    for seed in LOAD_SEEDS:
        path, what = _write(tmp_path, seed, base)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                vizcore.load(path)
            outcomes["ok"] += 1
        except vizcore.VizcoreError as exc:
            outcomes["error"] += 1
            assert "\n" not in exc.message, (seed, what, exc.message)  # one line
        except Exception as exc:  # noqa: BLE001 - the point of the test
            crashes.append(f"seed {seed} ({what}): {type(exc).__name__}: {exc}")
        path.unlink()
    assert not crashes, "\n".join(crashes)
    # the mutants are not all rejected at parse time: some load, many fail in later stages
    assert outcomes["ok"] >= 30 and outcomes["error"] >= 150, outcomes


def test_inspect_exits_0_or_2_without_traceback(tmp_path, base, capsys):
    codes: Counter[int] = Counter()
    for i, seed in enumerate(CLI_SEEDS):
        path, what = _write(tmp_path, seed, base)
        argv = ["inspect", str(path)] + ([] if i % 4 == 0 else ["--no-fidelity"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            code = main(argv)
        out, err = capsys.readouterr()
        assert code in (0, 2), (seed, what, err)
        assert "Traceback" not in err and "Traceback" not in out, (seed, what, err)
        if code == 2:
            assert err.lstrip().startswith("error:"), (seed, what, err)
        codes[code] += 1
    assert codes[0] >= 3 and codes[2] >= 10, codes


def test_inspect_in_a_subprocess_survives_mutants(tmp_path, base):
    """Mutants that load, through `vizcore inspect` in one fresh interpreter (torch, onnxruntime and onnx native
    code): a segfault or abort would end it with a negative exit code instead of the printed exit codes."""
    paths = [str(tmp_path / f"m{s}.onnx") for s in CLI_SEEDS if _loads(tmp_path, s, base)][:3]
    assert len(paths) == 3
    code = ("import sys; from vizcore.cli import main; "
            "print('codes', *[main(['inspect', p]) for p in sys.argv[1:]], file=sys.stderr)")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "VIZCORE_DISABLE_PLUGIN_AUTOLOAD": "1"}
    p = subprocess.run([sys.executable, "-c", code, *paths], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, (p.returncode, p.stderr[-2000:])
    assert "Traceback" not in p.stderr, p.stderr
    codes = p.stderr.strip().splitlines()[-1].split()
    assert codes[0] == "codes" and set(codes[1:]) <= {"0", "2"} and len(codes) == 4, codes


def _loads(tmp_path: Path, seed: int, base) -> bool:
    path, _ = _write(tmp_path, seed, base)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            vizcore.load(path)
        return True
    except vizcore.VizcoreError:
        return False


STRUCT_SEEDS = [*range(16), 750]  # 750: runs at batch 1 only (was a traceback in prune)


def test_structural_mutants_through_inspect_check_and_prune(tmp_path):
    """Field-level mutants of two real small models (most still parse and convert) through inspect, check and
    prune in-process: exit 0, 1 or 2 with a one-line error, never a traceback. The campaign: bench/fuzz_campaign.py
    --structural (>= 1,000 mutants, bench/RESULTS.md)."""
    from fuzz_mutants import COMMANDS, crashed, residual_model, run_command, structural_mutant

    bases = [base_model(), residual_model()]
    seen: Counter[str] = Counter()
    bad = []
    for seed in STRUCT_SEEDS:
        data, what = structural_mutant(seed, bases)
        path = tmp_path / f"s{seed}.onnx"
        path.write_bytes(data)
        for name, argv in COMMANDS.items():
            code, err = run_command(main, [a.replace("MODEL", str(path)) for a in argv])
            seen[f"{name} {code}"] += 1
            if crashed(code, err):
                bad.append(f"seed {seed} ({what}) {name}: {code}: {err.strip()[-300:]}")
    assert not bad, "\n".join(bad)
    assert seen["check 0"] + seen["check 1"] >= 3 and seen["prune 2"] >= 3, seen  # both paths were exercised
