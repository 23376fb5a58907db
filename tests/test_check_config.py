"""Check thresholds from TOML: where they are found, precedence, per-layer overrides, and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from vizcore.errors import OptionError
from vizcore.health.config import CheckConfig, find_config, load_config, parse, read_file


def test_defaults_and_precedence(tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    assert load_config(model) == CheckConfig()
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n')
    assert find_config(model) is None  # a pyproject.toml without the section is not a config
    (tmp_path / "pyproject.toml").write_text("[tool.vizcore.check]\nmax-dead-fraction = 0.1\n")
    assert load_config(model).max_dead_fraction == 0.1
    (tmp_path / "vizcore.toml").write_text("[check]\nmax_dead_fraction = 0.3\nimages = 'probes'\n")
    cfg = load_config(model)
    assert cfg.max_dead_fraction == 0.3 and cfg.source == str(tmp_path / "vizcore.toml")
    assert cfg.images == str(tmp_path / "probes")  # relative to the config file
    assert cfg.with_options(max_dead_fraction=0.5, seed=None).max_dead_fraction == 0.5
    other = tmp_path / "other.toml"
    other.write_text("[tool.vizcore.check]\nfail-on-duplicates = true\n")
    assert load_config(model, other).fail_on_duplicates is True


def test_per_layer_overrides() -> None:
    cfg = parse({"max-dead-fraction": 0.1, "overrides": {"/features.1*": {"max-dead-fraction": 0.5},
                                                         "7": {"skip": True},
                                                         "/head/*": {"fail-on-duplicates": True}}})
    assert cfg.limits("/features.18/Relu", None, "3").max_dead_fraction == 0.5
    assert cfg.limits("/other/Relu", None, "3").max_dead_fraction == 0.1
    assert cfg.limits("/other/Relu", None, "7").skip is True  # by index
    assert cfg.limits("/x/Relu", "/head/conv", "9").fail_on_duplicates is True  # by the Conv's name


@pytest.mark.parametrize(("section", "message"), [
    ({"max-dead-fraktion": 0.1}, "did you mean 'max-dead-fraction'"),
    ({"max-dead-fraction": "lots"}, "wrong type"),
    ({"max-dead-fraction": 1.5}, "not a fraction"),
    ({"fail-on-duplicates": 1}, "wrong type"),
    ({"layers": 3}, "wrong type"),
    ({"ascent": "some"}, "not known"),
    ({"overrides": {"x": {"max-dead": 0.1}}}, "unknown per-layer key"),
    ({"overrides": {"x": {"max-dead-fraction": 2}}}, "not a fraction"),
    ({"overrides": {"x": 3}}, "not a table"),
])
def test_bad_settings_are_one_line_errors(section: dict, message: str) -> None:
    with pytest.raises(OptionError) as exc:
        parse(section, "vizcore.toml")
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_bad_toml(tmp_path: Path) -> None:
    p = tmp_path / "vizcore.toml"
    p.write_text("[check\nmax = 1")
    with pytest.raises(OptionError, match="not valid TOML"):
        read_file(p)
    with pytest.raises(OptionError, match="not found"):
        read_file(tmp_path / "nope.toml")
