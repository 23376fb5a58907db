"""A larger fuzz campaign than tests/test_fuzz.py: N seeded mutants of a small model through `vizcore.load` and
(every K-th) `vizcore inspect` in-process; prints crash classes (exception type + where it was raised) and counts.

    python bench/fuzz_campaign.py [--n 2000] [--start 0] [--inspect-every 4] [--timeout 20]
    python bench/fuzz_campaign.py --structural [--n 1000] [--timeout 60]   # inspect, check and prune on each

A crash is anything but a VizcoreError from load, or an exit code outside {0, 2} / a traceback on stderr from the
CLI. Run it from the repository root (PYTHONPATH decides which vizcore is tested; the mutants come from
tests/fuzz_mutants.py). Results are recorded in bench/RESULTS.md ("fuzz").
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fuzz_mutants import COMMANDS, base_model, crashed, mutant, residual_model, run_command, structural_mutant  # noqa: E402


class Hang(BaseException):
    """The alarm: a BaseException, so that neither vizcore's broad handlers nor `run_command` swallow it."""


def _alarm(signum: int, frame: object) -> None:
    raise Hang()


def _where(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    mine = [f for f in frames if "/vizcore/" in f.filename]
    f = (mine or frames or [None])[-1]
    last = frames[-1] if frames else None
    loc = f"{Path(f.filename).name}:{f.name}" if f else "?"
    if last is not None and last is not f:
        loc += f" -> {Path(last.filename).name}:{last.name}"
    return f"{type(exc).__name__} at {loc}"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--inspect-every", type=int, default=4)
    ap.add_argument("--timeout", type=int, default=20)
    ap.add_argument("--structural", action="store_true", help="field-level mutants of two real small models through "
                    "inspect, check and prune (tests/fuzz_mutants.structural_mutant), instead of load + inspect")
    ap.add_argument("--max-gib", type=float, default=10.0, help="address-space limit: a huge allocation becomes a "
                    "MemoryError (recorded) instead of the kernel's OOM kill of the whole campaign")
    args = ap.parse_args()
    import resource

    limit = int(args.max_gib * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    import vizcore
    from vizcore.cli import main as cli

    VizcoreError = vizcore.VizcoreError
    print(f"vizcore from {vizcore.__file__}", flush=True)
    if args.structural:
        return structural(args, cli)
    base = base_model()
    crashes: dict[str, list[str]] = defaultdict(list)
    outcomes: Counter[str] = Counter()
    signal.signal(signal.SIGALRM, _alarm)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.onnx"
        for seed in range(args.start, args.start + args.n):
            data, what = mutant(seed, base)
            path.write_bytes(data)
            signal.alarm(args.timeout)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    vizcore.load(path)
                outcomes["load ok"] += 1
            except VizcoreError as exc:
                outcomes["load VizcoreError"] += 1
                if exc.message.startswith("cannot load ") and exc.__cause__ is not None:
                    # caught by load's catch-all: not a crash for the user, but a bug to fix where it is raised
                    outcomes["load VizcoreError via the catch-all"] += 1
                    crashes[f"load (caught at the boundary): {_where(exc.__cause__)}"].append(
                        f"{seed} {what} ({exc.message[:90]})")
            except BaseException as exc:  # noqa: BLE001 - a campaign records everything
                if isinstance(exc, KeyboardInterrupt):
                    raise
                outcomes["load crash"] += 1
                msg = str(exc).splitlines()[0][:90] if str(exc).strip() else ""
                crashes[f"load: {_where(exc)}"].append(f"{seed} {what} ({msg})")
            finally:
                signal.alarm(0)
            if args.inspect_every and seed % args.inspect_every == 0:
                code, err = _timed(cli, ["inspect", str(path)], args.timeout)
                bad = crashed(code, err)
                outcomes["inspect crash" if bad else f"inspect exit {code}"] += 1
                if bad:
                    last = ([ln for ln in err.splitlines() if ln.strip()] or [str(code)])[-1][:120]
                    crashes[f"inspect: exit {code}: {last.split(':')[0]}"].append(f"{seed} {what} ({last})")
    took = time.perf_counter() - t0
    print(f"{args.n} mutants (seeds {args.start}..{args.start + args.n - 1}) in {took:.0f} s")
    return _summary(outcomes, crashes)


def _timed(cli: object, argv: list[str], timeout: int) -> tuple[object, str]:
    """`run_command` under an alarm: past `timeout` seconds the outcome is "hang"."""
    signal.alarm(timeout)
    try:
        return run_command(cli, argv)
    except Hang:
        return "hang", ""
    finally:
        signal.alarm(0)


def _summary(outcomes: Counter[str], crashes: dict[str, list[str]]) -> int:
    """Print the outcome counts and the crash classes (most frequent first); 1 if there was any crash."""
    for k, v in sorted(outcomes.items()):
        print(f"  {k}: {v}")
    print(f"{len(crashes)} crash classes:")
    for k, seeds in sorted(crashes.items(), key=lambda kv: -len(kv[1])):
        print(f"  [{len(seeds)}] {k}\n       e.g. {'; '.join(seeds[:2])}")
    return 1 if crashes else 0


def structural(args: argparse.Namespace, cli: object) -> int:
    """Every structural mutant through inspect, check and prune; a command that runs past --timeout is a hang."""
    bases = [base_model(), residual_model()]
    outcomes: Counter[str] = Counter()
    crashes: dict[str, list[str]] = defaultdict(list)
    signal.signal(signal.SIGALRM, _alarm)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.onnx"
        for seed in range(args.start, args.start + args.n):
            data, what = structural_mutant(seed, bases)
            path.write_bytes(data)
            for name, argv in COMMANDS.items():
                code, err = _timed(cli, [a.replace("MODEL", str(path)) for a in argv], args.timeout)
                outcomes[f"{name} exit {code}" if code in (0, 1, 2) else f"{name} crash"] += 1
                if crashed(code, err):
                    last = ([ln for ln in err.splitlines() if ln.strip()] or [str(code)])[-1][:120]
                    crashes[f"{name}: {str(code)[:60]}"].append(f"{seed} {what} ({last})")
            if (seed - args.start + 1) % 50 == 0:
                print(f"  {seed - args.start + 1}/{args.n} mutants, {time.perf_counter() - t0:.0f} s", flush=True)
    print(f"{args.n} structural mutants (seeds {args.start}..{args.start + args.n - 1}) x {len(COMMANDS)} commands "
          f"in {time.perf_counter() - t0:.0f} s")
    return _summary(outcomes, crashes)


if __name__ == "__main__":
    os.environ.setdefault("VIZCORE_DISABLE_PLUGIN_AUTOLOAD", "1")
    sys.exit(main())
