"""RenderOptions (validated once, device settings as fields, from_env), the caller's state after a render (RNG,
memory format, device), the seeded generator of params and transforms, and README's defaults table."""

import collections
import inspect
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny import IMAGE_META, TinyCNN, export, load_tiny

import vizcore
from vizcore.engine import RenderOptions, budget, device, fusion, net
from vizcore.engine.options import for_input
from vizcore.errors import DeviceError, OptionError
from vizcore.params import FFTImage, PixelImage
from vizcore.plugins import Manager, Settings
from vizcore.transforms import standard

FAST = dict(steps=12, size=32, seed=0, lr=0.2)
README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return load_tiny(TinyCNN(), tmp_path_factory.mktemp("m"))


# -- validation in one place ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("change, text", [
    ({"lr": float("nan")}, "finite"), ({"lr": float("inf")}, "finite"), ({"lr": -1.0}, "positive"),
    ({"regularizers": {"l1": float("nan")}}, "l1"), ({"regularizers": {"tv": float("inf")}}, "tv"),
    ({"value_range": "nan,1"}, "finite"), ({"value_range": "0,inf"}, "finite"), ({"value_range": "1,0"}, "range"),
    ({"max_memory": "inf"}, "finite"), ({"max_memory": "nan"}, "memory"), ({"max_memory": "-1G"}, "positive"),
    ({"max_memory": 0}, "positive"), ({"seed": 10**23}, "out of range"), ({"seed": 1.5}, "integer"),
    ({"seed": "1e23"}, "out of range"), ({"steps": 0}, "positive"), ({"steps": 2.5}, "integer"),
    ({"steps": True}, "integer"), ({"size": 4}, "too small"), ({"relu_override": 2.0}, "fraction"),
    ({"relu_override": float("nan")}, "finite"), ({"finish": 1.5}, "finish is a fraction"),
    ({"finish": "x"}, "finish must be a number"), ({"images_per_unit": 0}, "images_per_unit"),
    ({"batch_size": 0}, "batch_size"), ({"record_every": 0}, "record_every"),
])
def test_bad_options_are_one_option_error(change, text):
    with pytest.raises(OptionError, match=re.escape(text)) as err:
        RenderOptions(**change)
    assert "\n" not in str(err.value)


def test_options_are_frozen_normalized_and_json_ready():
    o = RenderOptions(steps="64", seed="3", lr="0.1", transforms=["pad", "jitter"], regularizers={"l1": 0, "tv": 1})
    assert (o.steps, o.seed, o.lr, o.transforms) == (64, 3, 0.1, ("pad", "jitter"))
    with pytest.raises(AttributeError):
        o.steps = 3  # type: ignore[misc]
    j = o.to_json()
    assert j["regularizers"] == {"tv": 1.0} and j["transforms"] == ["pad", "jitter"]
    assert set(j) == set(RenderOptions.field_names())
    assert o.replace(steps=8).steps == 8 and o.steps == 64
    with pytest.raises(OptionError):
        o.replace(lr=float("nan"))


def test_device_settings_come_from_the_environment_only_through_from_env():
    env = {"VIZCORE_CPU_HEAP": "0", "VIZCORE_CUDNN_BENCHMARK": "0", "VIZCORE_FUSE": "0", "VIZCORE_CHANNELS_LAST": "1"}
    o = RenderOptions.from_env(env)
    assert (o.cpu_heap, o.cudnn_benchmark, o.fuse, o.channels_last) == (False, False, False, True)
    d = RenderOptions.from_env({})
    assert (d.cpu_heap, d.cudnn_benchmark, d.fuse, d.channels_last) == (True, True, True, None)
    assert RenderOptions.from_env(env, fuse=True).fuse is True  # a given value wins over the environment
    assert RenderOptions.from_env({"VIZCORE_CHANNELS_LAST": "0"}).channels_last is False
    with pytest.raises(OptionError, match="VIZCORE_FUSE"):
        RenderOptions.from_env({"VIZCORE_FUSE": "yes"})


def test_no_module_below_the_options_reads_the_device_variables():
    root = Path(vizcore.__file__).resolve().parent
    readers = [p.name for p in root.rglob("*.py") if p.name != "options.py"
               and re.search(r"environ.*VIZCORE_(CPU_HEAP|CUDNN_BENCHMARK|FUSE|CHANNELS_LAST)", p.read_text())]
    assert readers == []


def test_device_settings_are_fields_recorded_in_the_settings(model):
    r = vizcore.render(model, "3:1", fuse=False, channels_last=False, cpu_heap=False, device="cpu", **FAST)
    s = r.settings
    assert (s["fuse"], s["channels_last"], s["cpu_heap"], s["fused_conv_clamps"]) == (False, False, False, 0)
    on = vizcore.render(model, "3:1", device="cpu", **FAST)
    assert on.settings["channels_last"] is True and on.settings["cudnn_benchmark"] is True
    assert np.abs(on.images.astype(int) - r.images.astype(int)).max() <= 2
    resolved = for_input(RenderOptions(**FAST), 4).to_json()  # param "auto" is recorded as what it became: fft
    assert resolved["param"] == "fft"
    for key, value in resolved.items():  # the manifest's settings hold every option
        assert key in s, key
        if key in ("steps", "lr", "seed", "param", "transforms", "relu_override"):
            assert s[key] == value, key


def test_the_low_level_switches_take_their_setting_as_an_argument(model):
    cut = model.cut_at([3])
    assert net.memory_format(cut, (1, 3, 32, 32), force=False) == torch.contiguous_format
    assert net.memory_format(cut, (1, 3, 32, 32), force=None) == torch.channels_last
    assert fusion.fuse_conv_clamps(model.cut_at([3]), enabled=False) == 0
    torch.backends.cudnn.benchmark = False
    with device.device_settings(torch.device("cuda"), cuda=False):
        assert torch.backends.cudnn.benchmark is False
    with device.device_settings(torch.device("cuda")):
        assert torch.backends.cudnn.benchmark is True
    assert torch.backends.cudnn.benchmark is False


# -- built once, handed down ----------------------------------------------------------------------------------------
@pytest.fixture
def counted(monkeypatch):
    """Calls, by name, of the option validation, the size parser and the exporter table (the exporter check)."""
    from vizcore import graph_inputs
    from vizcore.engine import options as options_mod

    calls = collections.Counter()

    def count(owner, name, key):
        real = getattr(owner, name)

        def wrapper(*args, **kwargs):
            calls[key] += 1
            return real(*args, **kwargs)
        monkeypatch.setattr(owner, name, wrapper)

    count(RenderOptions, "__post_init__", "validated")
    count(graph_inputs, "parse_size", "size")
    monkeypatch.setattr(options_mod, "parse_size", graph_inputs.parse_size)  # its own reference, counted too
    registry = Manager.registry

    def exporters(self, kind):
        calls["exporters"] += kind == "exporters"
        return registry(self, kind)
    monkeypatch.setattr(Manager, "registry", exporters)
    return calls


def test_one_cli_render_validates_its_options_once_and_checks_exporters_and_size_once(tmp_path, counted):
    from vizcore.cli import main

    path = export(TinyCNN(), tmp_path / "m.onnx", (1, 3, 32, 32), metadata=IMAGE_META)
    counted.clear()
    assert main(["render", str(path), "3:0", "class:1", "--steps", "2", "--size", "32", "--out", str(tmp_path / "o"),
                 "--quiet"]) == 0
    assert counted["validated"] == 1  # the CLI's RenderOptions, handed to vizcore.render and the engine
    assert counted["exporters"] == 1  # checked before the load; the render and the save take the checked value
    assert counted["size"] == 2  # --size read into the options; model.load checks its own argument once
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["0000_3_0.png", "0001_class_1.png", "grid.png",
                                                                  "manifest.json"]


def test_one_python_render_validates_its_options_once(model, counted):
    counted.clear()
    r = vizcore.render(model, "3:1", transforms="pad,jitter", tv=0.5, **FAST)
    assert counted["validated"] == 1 and counted["exporters"] == 1 and counted["size"] == 1
    assert r.settings["transforms"] == ["pad", "jitter"] and r.settings["regularizers"] == {"tv": 0.5}
    assert r.settings["param"] == "fft"  # "auto" resolved for the input, without validating again
    given = RenderOptions(**FAST)
    counted.clear()
    same = vizcore.render(model, "3:1", given, transforms="pad,jitter", tv=0.5)
    assert counted["validated"] == 1  # one options value with the keywords applied
    assert np.array_equal(same.images, r.images)
    counted.clear()
    vizcore.render(model, "3:1", given)
    assert counted["validated"] == 0  # validated when it was built


def test_an_unknown_render_keyword_is_one_line_naming_the_closest(model):
    with pytest.raises(OptionError, match="no option 'step'") as err:
        vizcore.render(model, "3:1", step=3)
    assert "steps" in err.value.hint and "\n" not in str(err.value)
    with pytest.raises(OptionError, match="no option 'colour'"):
        vizcore.render(model, "3:1", colour=3)


def test_a_signal_model_resolves_auto_to_signal_and_its_penalty_without_revalidating(counted):
    o = RenderOptions(regularizers={"l1": 0.1})
    counted.clear()
    got = for_input(o, 3)
    assert (got.param, dict(got.regularizers)) == ("signal", {"ends": 1.0, "l1": 0.1}) and counted["validated"] == 0
    assert o.param == "auto" and dict(o.regularizers) == {"l1": 0.1}  # the given value is untouched


def test_render_options_travel_to_a_worker_as_they_are():
    import pickle

    o = RenderOptions(size="60,160", regularizers={"tv": 1}, transforms=["pad"])
    back = pickle.loads(pickle.dumps(o))
    assert back == o and back.size == (60, 160) and back.regularizers == {"tv": 1.0}


# -- the caller's state ---------------------------------------------------------------------------------------------
def test_the_callers_global_rng_is_untouched(model):
    torch.manual_seed(123)
    before = torch.get_rng_state()
    expected = torch.rand(5)
    torch.manual_seed(123)
    vizcore.render(model, ["3:0", "3:1"], **FAST)
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(torch.rand(5), expected)  # as if no render had happened


def test_a_legacy_plugin_param_without_generator_still_works_and_leaves_the_rng_alone(model):
    class Legacy:
        @vizcore.hookimpl
        def vizcore_add_params(self):
            def old(shape, units=1, **options):  # the older contract: draws from torch's global RNG
                return PixelImage(shape, units=units, **options)
            return {"old": old}

    m = Manager(Settings(autoload=False))
    m.register(Legacy(), "legacy")
    torch.manual_seed(7)
    before = torch.get_rng_state()
    a = vizcore.render(model, ["3:0", "3:2"], param="old", plugins=m, **FAST)
    assert torch.equal(torch.get_rng_state(), before)
    b = vizcore.render(model, ["3:0", "3:2"], param="old", plugins=m, **FAST)
    one = vizcore.render(model, "3:2", param="old", plugins=m, **FAST)
    assert np.array_equal(a.images, b.images)  # seeded: reproducible
    assert np.abs(a.images[1].astype(int) - one.images[0].astype(int)).max() <= 2  # batched == one at a time


def test_the_models_memory_format_and_device_come_back(model):
    convs = [p for p in model.module.parameters() if p.dim() == 4]
    assert convs and all(p.is_contiguous() for p in convs)
    home = model.device
    r = vizcore.render(model, "3:1", device="cpu", **FAST)
    assert r.settings["channels_last"] is True  # the render did use channels_last ...
    assert all(p.is_contiguous() for p in convs)  # ... and the caller's weights are contiguous again
    assert not any(p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous() for p in convs)
    assert model.device == home and all(p.device == home for p in model.module.parameters())
    with pytest.raises(OptionError):  # also after an error inside the render
        vizcore.render(model, "3:1", on_step=lambda run, st: (_ for _ in ()).throw(OptionError("stop")), **FAST)
    assert all(p.is_contiguous() for p in convs)


def test_a_user_channels_last_model_keeps_its_format(model):
    convs = [p for p in model.module.parameters() if p.dim() == 4]
    model.module.to(memory_format=torch.channels_last)
    try:
        vizcore.render(model, "3:1", channels_last=False, **FAST)
        assert all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    finally:
        model.module.to(memory_format=torch.contiguous_format)


# -- params and transforms draw from the generator ------------------------------------------------------------------
@pytest.mark.parametrize("cls", [FFTImage, PixelImage])
def test_params_draw_from_the_generator_only(cls):
    torch.manual_seed(0)
    state = torch.get_rng_state()
    a = cls((2, 3, 16, 16), units=2, generator=torch.Generator().manual_seed(5))()
    b = cls((2, 3, 16, 16), units=2, generator=torch.Generator().manual_seed(5))()
    c = cls((2, 3, 16, 16), units=2, generator=torch.Generator().manual_seed(6))()
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_transforms_draw_from_the_generator_only():
    x = torch.rand(2, 3, 40, 40, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    state = torch.get_rng_state()

    def apply(seed):
        g = torch.Generator().manual_seed(seed)
        ts = standard(40, generator=g)
        assert all(isinstance(t, torch.nn.Module) for t in ts)
        outs = []
        for _ in range(4):
            y = x
            for t in ts:
                y = t(y)
            outs.append(y)
        return outs

    a, b, c = apply(1), apply(1), apply(2)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    assert any(p.shape != q.shape or not torch.equal(p, q) for p, q in zip(a, c))


# -- refused up front -----------------------------------------------------------------------------------------------
def test_a_huge_size_is_refused_with_an_estimate_before_anything_is_allocated():
    with pytest.raises(DeviceError, match=r"needs at least .*TiB") as err:
        budget.refuse_size(100000, 6 << 30)
    assert "--size" in err.value.hint
    budget.refuse_size(224, 6 << 30)  # an ordinary size passes


def test_a_render_that_would_take_days_is_refused_with_an_estimate(model):
    with pytest.raises(OptionError, match="hours"):
        vizcore.render(model, "3:0", steps=10**12, size=32)
    seconds = budget.refuse_slow(10**6, 256, 4, torch.device("cpu"))
    assert 0 < seconds < budget.MAX_SECONDS


def test_a_huge_size_in_the_python_api_is_refused_before_the_probe(model):
    with pytest.raises(DeviceError, match="memory budget"):
        vizcore.render(model, "3:0", steps=2, size=100000)


# -- README's defaults table ----------------------------------------------------------------------------------------
def _readme_defaults() -> dict[str, str]:
    text = README.read_text(encoding="utf-8")
    table = text.split("### Defaults, and why", 1)[1].split("\n\n", 2)[1]
    rows = {}
    for line in table.splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        m = re.fullmatch(r"`--([\w-]+)`", cells[0])
        if m:
            rows[m.group(1).replace("-", "_")] = cells[1]
    return rows


def test_readmes_defaults_table_matches_render_options():
    rows = _readme_defaults()
    assert {"param", "transforms", "steps", "size", "lr", "optimizer", "relu_override"} <= set(rows)
    d = RenderOptions()
    for name, cell in rows.items():
        value = getattr(for_input(d, 4) if name == "lr" else d, name)  # lr: an image's (the preset's for fft)
        first = re.match(r"`?([^`:(\s]+)", cell).group(1)
        if name == "transforms":
            assert (first,) == value, name
        elif name == "size":
            assert value is None and "model's" in cell, name  # None: the model's fixed size, else 224
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            assert math.isclose(float(first), float(value)), name
        else:
            assert first == value, name


# -- one clean house ------------------------------------------------------------------------------------------------
def test_the_render_path_is_made_of_short_functions():
    import ast

    root = Path(vizcore.__file__).resolve().parent
    files = [*sorted((root / "engine").glob("*.py")), root / "api.py", root / "targets.py",
             root / "commands" / "render.py"]
    long = [f"{p.name}:{n.name} ({n.end_lineno - n.lineno + 1} lines)" for p in files
            for n in ast.walk(ast.parse(p.read_text(encoding="utf-8")))
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > 60]
    assert long == []


#: Public API functions, held to MAX_PARAMETERS: loose keywords belong in an options object.
PUBLIC = [("vizcore.api", "render"), ("vizcore.api", "load"), ("vizcore.api", "save"), ("vizcore.health", "check"),
          ("vizcore.atlas", "build_report"), ("vizcore.executors", "render"), ("vizcore.prune", "prune")]
MAX_PARAMETERS = 12


@pytest.mark.parametrize("module, name", PUBLIC)
def test_public_api_functions_take_at_most_twelve_parameters(module, name):
    import importlib

    func = getattr(importlib.import_module(module), name)
    params = inspect.signature(func).parameters
    assert len(params) <= MAX_PARAMETERS, f"{module}.{name} takes {len(params)}: group them in an options object"


def test_engine_run_takes_render_options_and_no_loose_keywords():
    import inspect

    from vizcore import engine

    params = inspect.signature(engine.run).parameters
    assert "options" in params and not any(p.kind is p.VAR_KEYWORD for p in params.values())
    import importlib

    module = importlib.import_module("vizcore.engine.run")
    assert module.run is engine.run and not hasattr(module, "_run")
