"""The plugin manager: built-ins through the hooks, clashes, overrides, broken plugins, entry points, the CLI."""

from __future__ import annotations

import json
import sys
import textwrap
import types
from pathlib import Path

import pytest

from vizcore import cli, hookimpl, plugins
from vizcore.errors import OptionError, PluginError
from vizcore.plugins import BUILTIN_MODULES, Manager, Settings, override


@pytest.fixture(autouse=True)
def _fresh_manager(monkeypatch):
    for var in ("VIZCORE_DISABLE_PLUGIN_AUTOLOAD", "VIZCORE_DISABLE_PLUGINS", "VIZCORE_STRICT_PLUGINS"):
        monkeypatch.delenv(var, raising=False)
    plugins.reset()
    yield
    plugins.reset()


def _plugin(name: str, **hooks) -> types.ModuleType:
    """A plugin module with the given hook functions, marked with @hookimpl."""
    mod = types.ModuleType(name)
    for hook, fn in hooks.items():
        fn.__name__ = hook
        setattr(mod, hook, hookimpl(fn))
    return mod


def _params(**factories):
    return lambda: factories


def _manager(strict: bool = False) -> Manager:
    return Manager(Settings(autoload=False, strict=strict))


def _warnings(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]


# -- built-ins and run-time registration ---------------------------------------------------------------------------
def test_builtins_are_plugins_registered_through_the_same_hooks():
    m = _manager()
    infos, clashes = m.describe()
    assert not clashes
    builtins = {i.name: i for i in infos if i.source == "builtin"}
    assert set(builtins) == set(BUILTIN_MODULES)
    assert builtins["vizcore.params"].adds["params"] == ["fft", "pixel", "signal"]
    assert m.registry("params")["fft"][1] == "vizcore.params"
    assert "png" in builtins["vizcore.exporters.png"].adds["exporters"]
    assert m.registry("prepasses") and m.registry("converters")


def test_a_registered_plugin_joins_every_registry_and_can_leave():
    m = _manager()
    factory = object.__new__(type("F", (), {"__call__": lambda self, *a: None}))
    m.register(_plugin("extra", vizcore_add_params=_params(mine=factory)), "extra")
    assert m.get("params", "mine") is factory
    assert "mine" in m.names("params")
    m.unregister("extra")
    with pytest.raises(OptionError, match="unknown param 'mine'") as err:
        m.get("params", "mine")
    assert "fft" in err.value.hint  # the valid names are listed


def test_unknown_kind_is_an_error():
    with pytest.raises(OptionError, match="plugin kind"):
        _manager().registry("widgets")


@pytest.mark.parametrize(("hooks", "message"), [
    ({"vizcore_add_objective": lambda: {}}, "unknown hook 'vizcore_add_objective'"),  # a typo
    ({}, "no @vizcore.hookimpl functions"),
    ({"vizcore_render_step": lambda run, state, extra: None}, "extra"),  # an argument the spec does not have
])
def test_invalid_plugins_are_refused_with_the_reason(hooks, message):
    m = _manager()
    with pytest.raises(PluginError, match=message):
        m.register(_plugin("bad", **hooks), "bad")
    assert m.pm.get_plugin("bad") is None  # nothing half-registered


# -- clashes and overrides -----------------------------------------------------------------------------------------
def test_a_name_clash_is_an_error_naming_both_plugins():
    m = _manager()
    m.register(_plugin("one", vizcore_add_params=_params(warm=print)), "one")
    m.register(_plugin("two", vizcore_add_params=_params(warm=repr)), "two")
    with pytest.raises(PluginError, match="param 'warm' is defined by both 'one' and 'two'"):
        m.registry("params")


def test_redefining_a_builtin_is_a_clash_unless_marked_as_override():
    m = _manager()
    m.register(_plugin("mine", vizcore_add_params=_params(fft=print)), "mine")
    with pytest.raises(PluginError, match="'vizcore.params' and 'mine'"):
        m.get("params", "fft")
    m.unregister("mine")
    mine = override(lambda shape, **kw: None)
    m.register(_plugin("mine", vizcore_add_params=_params(fft=mine)), "mine")
    assert m.get("params", "fft") is mine
    infos, _ = m.describe()
    assert next(i for i in infos if i.name == "mine").adds == {"params": ["fft (overrides vizcore.params)"]}
    assert "fft" not in next(i for i in infos if i.name == "vizcore.params").adds["params"]


def test_two_overrides_of_one_name_clash():
    m = _manager()
    m.register(_plugin("a", vizcore_add_params=_params(fft=override(lambda *a: None))), "a")
    m.register(_plugin("b", vizcore_add_params=_params(fft=override(lambda *a: None))), "b")
    with pytest.raises(PluginError, match="both 'a' and 'b'"):
        m.registry("params")


# -- plugins that raise ----------------------------------------------------------------------------------------------
def _boom(*_, **__):
    raise RuntimeError("boom\nsecond line")


def test_a_plugin_raising_in_a_contribution_hook_is_named_in_one_line_and_skipped(capsys):
    m = _manager()
    m.register(_plugin("flaky", vizcore_add_params=_boom,
                       vizcore_add_exporters=lambda: {"flaky": print}), "flaky")
    assert "fft" in m.registry("params")
    assert _warnings(capsys) == ["warning: plugin 'flaky' raised in vizcore_add_params: RuntimeError: boom "
                                 "(skipped; --disable-plugin flaky silences this)"]
    assert "flaky" not in m.names("exporters")  # skipped entirely, not only for that hook
    infos, _ = m.describe()
    assert next(i for i in infos if i.name == "flaky").status == "failed"


def test_a_contribution_of_the_wrong_type_is_a_broken_plugin(capsys):
    m = _manager()
    m.register(_plugin("wrong", vizcore_add_params=lambda: ["fft"]), "wrong")
    assert m.names("params") == ["fft", "pixel", "signal"]
    assert "expected a dict name -> factory" in _warnings(capsys)[0]


def test_a_plugin_raising_in_a_lifecycle_hook_is_reported_once_and_the_others_still_run(capsys):
    m = _manager()
    seen = []
    m.register(_plugin("bad", vizcore_render_step=lambda run, state: _boom()), "bad")
    m.register(_plugin("good", vizcore_render_step=lambda state: seen.append(state)), "good")
    for step in range(3):
        m.call("vizcore_render_step", run=None, state=step)
    assert seen == [0, 1, 2]
    assert len(_warnings(capsys)) == 1


def test_strict_makes_a_raising_plugin_fatal():
    m = _manager(strict=True)
    m.register(_plugin("bad", vizcore_add_params=_boom), "bad")
    with pytest.raises(PluginError, match="plugin 'bad' raised in vizcore_add_params"):
        m.registry("params")


# -- entry points (a hand-made installed distribution on sys.path) and the CLI -----------------------------------
def _install(site: Path, dist: str, module: str, source: str, ep_name: str | None = None) -> None:
    """What `pip install` leaves behind, minus pip: the module and a dist-info with the entry point."""
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{dist.replace('-', '_')}-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text(f"[vizcore]\n{ep_name or dist} = {module}\n")


GOOD = """
    from vizcore import hookimpl
    from vizcore.objectives import Channel

    @hookimpl
    def vizcore_add_objectives():
        return {"{name}": Channel}
"""


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A fresh site-packages folder on sys.path; the modules imported from it are forgotten afterwards."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    yield site
    for name, mod in list(sys.modules.items()):
        if str(getattr(mod, "__file__", None) or "").startswith(str(site)):
            del sys.modules[name]


def _cli_json(capsys, *argv: str) -> tuple[int, dict, str]:
    code = cli.main([*argv, "plugins", "--json"])
    out = capsys.readouterr()
    return code, json.loads(out.out), out.err


def test_plugins_json_lists_builtins_and_entry_points_with_versions_and_what_they_add(site, capsys):
    _install(site, "vizcore-good", "vizcore_good_mod", GOOD.replace("{name}", "good"))
    code, data, err = _cli_json(capsys)
    assert code == 0 and not err and data["clashes"] == [] and data["autoload"] is True
    by_name = {p["name"]: p for p in data["plugins"]}
    assert by_name["vizcore-good"] == {"name": "vizcore-good", "version": "1.2.3", "source": "entry point",
                                       "package": "vizcore-good", "status": "ok", "error": None,
                                       "adds": {"objectives": ["good"]}}
    assert by_name["vizcore.params"]["source"] == "builtin"
    assert by_name["vizcore.params"]["version"] == data["vizcore_version"]
    assert [p["source"] for p in data["plugins"]][:len(BUILTIN_MODULES)] == ["builtin"] * len(BUILTIN_MODULES)


def test_a_plugin_that_raises_at_import_is_one_warning_line_and_the_tool_carries_on(site, capsys):
    _install(site, "vizcore-broken", "vizcore_broken_mod", "raise ImportError('needs libfoo')\n")
    code, data, err = _cli_json(capsys)
    assert code == 0
    assert err.strip() == ("warning: plugin 'vizcore-broken' failed to load: ImportError: needs libfoo "
                           "(skipped; --disable-plugin vizcore-broken silences this)")
    broken = next(p for p in data["plugins"] if p["name"] == "vizcore-broken")
    assert broken["status"] == "failed" and "needs libfoo" in broken["error"]

    assert cli.main(["--strict", "plugins"]) == 2
    assert "plugin 'vizcore-broken' failed to load" in capsys.readouterr().err

    code, data, err = _cli_json(capsys, "--disable-plugin", "vizcore-broken")
    assert code == 0 and err == ""
    assert next(p for p in data["plugins"] if p["name"] == "vizcore-broken")["status"] == "disabled"


def test_autoload_can_be_switched_off_from_the_environment(site, capsys, monkeypatch):
    _install(site, "vizcore-broken", "vizcore_broken_mod", "raise ImportError('needs libfoo')\n")
    monkeypatch.setenv("VIZCORE_DISABLE_PLUGIN_AUTOLOAD", "1")
    code, data, err = _cli_json(capsys)
    assert code == 0 and err == "" and data["autoload"] is False
    assert {p["source"] for p in data["plugins"]} == {"builtin"}


def test_a_clash_between_installed_plugins_names_both_and_fails(site, capsys):
    _install(site, "vizcore-one", "vizcore_one_mod", GOOD.replace("{name}", "same"))
    _install(site, "vizcore-two", "vizcore_two_mod", GOOD.replace("{name}", "same"))
    code = cli.main(["plugins"])
    out = capsys.readouterr().out
    assert code == 2
    assert "objective 'same' is defined by both 'vizcore-one' and 'vizcore-two'" in " ".join(out.split())
    assert "vizcore-one" in out and "vizcore.params" in out  # the table is still printed
    assert cli.main(["--disable-plugin", "vizcore-two", "plugins"]) == 0


def test_two_distributions_with_one_plugin_name_keep_the_first(site, capsys):
    _install(site, "vizcore-one", "vizcore_one_mod", GOOD.replace("{name}", "one"), ep_name="shared")
    _install(site, "vizcore-two", "vizcore_two_mod", GOOD.replace("{name}", "two"), ep_name="shared")
    m = Manager(Settings())
    warnings = _warnings(capsys)
    assert len(warnings) == 1 and "the name is taken by" in warnings[0]
    first = m.info["shared"].package
    assert m.info["shared"].status == "ok" and first in ("vizcore-one", "vizcore-two")
    assert {"one", "two"} & set(m.names("objectives")) == {first[len("vizcore-"):]}
    second = "vizcore-two" if first == "vizcore-one" else "vizcore-one"
    assert f"--disable-plugin {second} silences this" in warnings[0]
    Manager(Settings(disabled=frozenset({second})))
    assert _warnings(capsys) == []
