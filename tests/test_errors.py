"""errors.oneline: the one way an exception becomes part of a one-line message; it never raises itself."""

from __future__ import annotations

import pytest

from vizcore.errors import oneline


@pytest.mark.parametrize(("exc", "typed", "want"), [
    (RuntimeError(""), True, "RuntimeError"),                       # str(exc).splitlines()[0] raised IndexError here
    (RuntimeError("  \n\n "), True, "RuntimeError"),
    (ValueError("\n  bad shape\nmore detail"), True, "ValueError: bad shape"),
    (ValueError("bad shape"), False, "bad shape"),
    (OSError(), False, "OSError"),
])
def test_oneline(exc, typed, want):
    assert oneline(exc, typed=typed) == want


def test_oneline_cuts_at_the_limit():
    assert oneline(OSError("x" * 500), 10) == "OSError: " + "x" * 10
