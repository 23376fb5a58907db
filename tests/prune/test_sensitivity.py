"""The per-group sensitivity allocation of the lossy search (`vizcore/prune/sensitivity.py`): it thins out the
planted slack group and never the essential ones, channels go in units of 8 (every tensor keeps a multiple of 8),
the allocation orders cheap groups first and stops a group where its curve breaks the budget; and the augmented
recovery reads only the calibration inputs.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from prune_models import Slack, TwoBlocks, conv_channels, export, with_data

from vizcore.prune import prune
from vizcore.prune.candidates import Candidate
from vizcore.prune.recover import augment
from vizcore.prune.sensitivity import Curve, Group, allocate


@pytest.fixture(scope="module")
def slack(tmp_path_factory):
    return with_data(Slack(), tmp_path_factory.mktemp("slack"), seed=1)


def test_the_sensitivity_search_thins_the_slack_group_and_spares_the_essential_ones(slack, tmp_path):
    d, src = slack
    out = tmp_path / "small.onnx"
    rep = prune(src, out, data=str(d / "calib"), verify_data=str(d / "held"), budget="rel=0.01", latency_reps=0,
                reconstruct="off", ranking="sensitivity")
    assert rep.written and rep.verified, rep.to_json()["budget"]
    units = [u for st in rep.steps for u in st["units"]]
    assert units and all(u["unit"].startswith("/c2/Conv:") and u["channels"] == 8 for u in units), units
    got = conv_channels(out)
    assert got["/c2/Conv"][0] == 8, got  # the 24 slack channels went, the last 8 stay
    assert got["/c1/Conv"][0] == 16 and got["/c3/Conv"][0] == 16, got  # the essential groups are whole
    assert all(w[0] % 8 == 0 for name, w in got.items() if name.endswith("Conv")), got
    assert "sensitivity" in rep.evidence["importance"]


def test_taylor_ranking_units_of_8_and_one_channel_at_a_time(slack, tmp_path):
    d, src = slack
    rep = prune(src, tmp_path / "t.onnx", data=str(d / "calib"), budget="rel=0.01", latency_reps=0,
                reconstruct="off")  # the defaults: taylor, units of 8
    assert rep.written and "sensitivity" not in rep.evidence["importance"]
    got = conv_channels(tmp_path / "t.onnx")
    assert got["/c2/Conv"][0] < 32 and all(w[0] % 8 == 0 for n, w in got.items() if n.endswith("Conv")), got
    one = prune(src, tmp_path / "o.onnx", data=str(d / "calib"), budget="rel=0.01", latency_reps=0,
                reconstruct="off", channel_multiple=1)
    assert one.written and one.cost["macs"][1] < one.cost["macs"][0]
    assert all(u.get("channels") is None for st in one.steps for u in st["units"])  # single classes


def _units(group: str, n: int, macs: int = 100) -> list[Candidate]:
    return [Candidate("channel", f"{group}:{j}", macs, roots=(hash((group, j)) % 10**6,), group=group)
            for j in range(n)]


def test_the_allocation_takes_cheap_groups_first_keeps_order_and_stops_where_a_curve_breaks():
    cheap, dear = Group(("a",), "a", _units("a", 4), 40), Group(("b",), "b", _units("b", 4), 40)
    curves = [Curve(dear, {1: (0.5, True), 2: (1.0, True), 4: (3.0, False)}),
              Curve(cheap, {1: (1e-3, True), 2: (1.5e-3, True), 4: (0.01, True)})]
    order = [u.label for u in allocate(curves)]
    assert order == ["a:0", "a:1", "a:2", "a:3", "b:0", "b:1"], order  # b's 3rd and 4th units broke the budget
    # a curve that falls again never reorders a group's units (its marginal cost is kept non-decreasing)
    bumpy = Curve(Group(("c",), "c", _units("c", 3), 30), {1: (0.4, True), 2: (0.1, True), 3: (0.2, True)})
    assert [u.label for u in allocate([bumpy])] == ["c:0", "c:1", "c:2"]


def test_augment_is_seeded_stays_in_range_and_changes_the_inputs():
    x = torch.rand(4, 3, 16, 16)
    lo, hi = torch.zeros(1, 3, 1, 1), torch.ones(1, 3, 1, 1)
    a = augment(x, torch.Generator().manual_seed(5), lo, hi)
    b = augment(x, torch.Generator().manual_seed(5), lo, hi)
    c = augment(x, torch.Generator().manual_seed(6), lo, hi)
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)
    assert float(a.min()) >= 0 and float(a.max()) <= 1 and float((a - x).abs().mean()) > 1e-3


def test_augmented_recovery_reads_only_the_calibration_inputs(tmp_path, monkeypatch):
    """A poisoned held-out set (NaN) is read only after the search and the recovery: the recovery's losses and the
    steps are those of a prune without it."""
    from vizcore.prune import compress, inputs

    src = export(TwoBlocks(), tmp_path / "m.onnx")
    rng = np.random.default_rng(0)
    for name, x in (("calib", rng.standard_normal((32, 3, 16, 16))), ("poison", np.full((8, 3, 16, 16), np.nan))):
        (tmp_path / name).mkdir()
        np.save(tmp_path / name / "x.npy", x.astype(np.float32))
    events: list[str] = []
    real_data, real_recover = inputs.Feeder.data, compress.recover
    monkeypatch.setattr(inputs.Feeder, "data", lambda self, path, flag: events.append(flag) or
                        real_data(self, path, flag))
    monkeypatch.setattr(compress, "recover", lambda *a, **k: events.append(f"recover {k['teacher'] is not None}")
                        or real_recover(*a, **k))
    kw = dict(data=str(tmp_path / "calib"), budget="cos=0.98", latency_reps=0, recover=6, recover_lr=3e-3,
              recover_augment=True, device="cpu", channel_multiple=1, reconstruct="off")
    clean = prune(src, tmp_path / "a.onnx", **kw)
    n = len(events)
    poisoned = prune(src, tmp_path / "b.onnx", verify_data=str(tmp_path / "poison"), **kw)
    assert clean.recovery and all(r["augment"] for r in clean.recovery["rounds"])
    assert events[n:] == events[:n] + ["--verify-data"] and "recover True" in events[:n]
    assert [r["loss_last"] for r in poisoned.recovery["rounds"]] == [r["loss_last"] for r in clean.recovery["rounds"]]
    assert [s["calibration"] for s in poisoned.steps] == [s["calibration"] for s in clean.steps]
    assert clean.written and not poisoned.written


def test_flip_risk_is_the_share_of_the_top1_margin_lost():
    from vizcore.prune.sensitivity import flip_risk

    a = np.array([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0]])
    assert flip_risk(a, a) == 0.0
    assert flip_risk(a, a + np.array([[0.0, 0.5, 0.0], [0.0, 0.0, 0.0]])) == pytest.approx(0.25)  # half of one
    assert flip_risk(a, np.array([[1.0, 2.0, 0.0], [0.0, 3.0, 1.0]])) == pytest.approx(1.0)  # 2 of 1: flipped
    assert flip_risk(a, a + 1.0) == 0.0  # a common shift of the logits loses nothing


@pytest.mark.parametrize("bad", [dict(ranking="global"), dict(channel_multiple=0), dict(recover_augment="yes"),
                                 dict(sensitivity_cost="flips")])
def test_bad_search_options_are_one_line(bad):
    from vizcore.errors import OptionError
    from vizcore.prune.options import PruneOptions

    with pytest.raises(OptionError) as e:
        PruneOptions(budget="top1=0.99", **bad)
    assert "\n" not in str(e.value)
