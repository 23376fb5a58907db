"""JUnit XML for CI systems: one test case per check per layer, so Jenkins/GitLab/GitHub show what failed where."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# Characters XML 1.0 cannot hold (control characters other than tab, newline, carriage return; surrogates; U+FFFE/F).
_NOT_XML = re.compile("[^\u0009\u000a\u000d\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


@dataclass(frozen=True)
class Case:
    """One test case: `classname` groups it (the layer, or "model"), `name` is the check."""

    classname: str
    name: str
    failure: str | None = None  # message when the check failed
    skipped: str | None = None  # reason when the check did not run
    details: str = ""  # system-out text (e.g. the channel indices)
    time: float = 0.0


class Failures:
    """A report's failure messages keyed by (check, layer): each JUnit case takes its own, the rest get cases too."""

    def __init__(self, failures: Any) -> None:
        self._by: dict[tuple[str, str | None], list[str]] = {}
        for f in failures:
            self._by.setdefault((f.check, f.layer), []).append(f.message)

    def take(self, check: str, layer: str | None = None, any_layer: bool = False) -> str | None:
        """The joined messages of (check, layer) — of every layer with `any_layer` — removed; None: it passed."""
        keys = [k for k in self._by if k[0] == check and (any_layer or k[1] == layer)]
        msgs = [m for k in keys for m in self._by.pop(k)]
        return "\n".join(msgs) if msgs else None

    def rest(self) -> list[Case]:
        """Cases for the failures no case took (e.g. non-finite activations)."""
        return [Case(layer or "model", check, "\n".join(msgs)) for (check, layer), msgs in self._by.items()]


class Report:
    """What check and diff reports share: JSON text from `to_json()`, JUnit XML from `junit_cases()`."""

    suite = "vizcore"
    timings: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        raise NotImplementedError

    def junit_cases(self) -> list[Case]:
        raise NotImplementedError

    def junit_suite(self) -> str:
        """The JUnit test suite's name."""
        return self.suite

    def dumps(self) -> str:
        """The JSON report as text (strict JSON: no NaN)."""
        return json.dumps(self.to_json(), indent=2, allow_nan=False) + "\n"

    def junit(self) -> str:
        """The report as JUnit XML."""
        return junit_xml(self.junit_suite(), self.junit_cases(), self.timings.get("total", 0.0))


def _clean(s: str) -> str:
    return _NOT_XML.sub("\ufffd", s)


def junit_xml(suite: str, cases: Sequence[Case], time: float = 0.0) -> str:
    """A JUnit XML document (one <testsuite> inside <testsuites>) for these cases."""
    failures = sum(1 for c in cases if c.failure is not None)
    skipped = sum(1 for c in cases if c.skipped is not None and c.failure is None)
    counts = {"tests": str(len(cases)), "failures": str(failures), "errors": "0", "skipped": str(skipped),
              "time": f"{time:.3f}"}
    root = ET.Element("testsuites", {"name": _clean(suite), **counts})
    ts = ET.SubElement(root, "testsuite", {"name": _clean(suite), **counts})
    for c in cases:
        tc = ET.SubElement(ts, "testcase", {"classname": _clean(c.classname), "name": _clean(c.name),
                                            "time": f"{c.time:.3f}"})
        if c.failure is not None:
            f = ET.SubElement(tc, "failure", {"message": _clean(c.failure.splitlines()[0] if c.failure else ""),
                                              "type": "threshold"})
            f.text = _clean(c.failure)
        elif c.skipped is not None:
            ET.SubElement(tc, "skipped", {"message": _clean(c.skipped)})
        if c.details:
            ET.SubElement(tc, "system-out").text = _clean(c.details)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
