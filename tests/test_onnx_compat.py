"""The converter mechanism: onnx2torch's private registry (fails loudly if it changes), overrides, aliases,
third-party converters through the plugin hook, and the op versions today's exporters emit."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from conftest import make_onnx, ort_run, tensor
from onnx import defs, helper

import vizcore
from vizcore.onnx_compat import Converter, converter, registry
from vizcore.onnx_compat.converters import _all
from vizcore.onnx_compat.converters._common import result
from vizcore.onnx_compat.converters.aliases import ALIASES, LEGACY_ATTRIBUTES
from vizcore.plugins import Manager, Settings, get_manager


def test_onnx2torch_private_registry_is_what_vizcore_expects():
    """vizcore overrides built-in converters through onnx2torch's private `_CONVERTER_REGISTRY`.

    If this fails, onnx2torch changed its private API: update vizcore/onnx_compat/registry.py (the only user).
    """
    from onnx2torch.node_converters import registry as o2t

    table = o2t._CONVERTER_REGISTRY
    assert isinstance(table, dict) and len(table) > 200
    key = next(iter(table))
    assert isinstance(key, o2t.OperationDescription) and key._fields == ("domain", "operation_type", "version")
    assert all(callable(v) for v in table.values())
    assert o2t.OperationDescription("", "Relu", 14) in table
    # get_converter resolves the since-version and reads this dict, so writing it overrides a converter
    desc = o2t.OperationDescription("", "Relu", 14)
    saved = table[desc]
    try:
        table[desc] = sentinel = lambda node, graph: None  # noqa: E731
        assert o2t.get_converter("Relu", 20) is sentinel
    finally:
        table[desc] = saved
    with pytest.raises(ValueError):  # add_converter refuses duplicates: why the private dict is needed
        o2t.add_converter("Relu", 14)(lambda node, graph: None)


def test_overrides_replace_builtins_and_keep_them_reachable():
    from onnx2torch.node_converters import registry as o2t

    before = dict(o2t._CONVERTER_REGISTRY)
    overridden = [c for c in _all() if c.override]
    assert {c.op_type for c in overridden} >= {"Conv", "MaxPool", "AveragePool", "GlobalAveragePool", "Reshape",
                                               "LayerNormalization", "Resize", "Pad", "Clip", "Slice"}
    with registry.installed(_all()):
        for c in overridden:
            desc = o2t.OperationDescription("", c.op_type, c.version)
            assert o2t._CONVERTER_REGISTRY[desc] is c.fn
            assert registry.builtin(c.op_type, c.version) is not c.fn  # onnx2torch's own, for delegation
    assert o2t._CONVERTER_REGISTRY == before  # restored exactly: entries and functions


def test_override_flag_is_set_exactly_where_onnx2torch_has_a_converter():
    """Without override=True an existing built-in wins silently; with it and no built-in, the flag lies."""
    builtins = set(registry.builtin_keys())
    wrong = [c.key for c in _all() if c.override != (("", c.op_type, c.version) in builtins)]
    assert not wrong


def test_every_vizcore_converter_is_registered_through_the_hook():
    table = get_manager().registry("converters")
    assert {c.key for c in _all()} <= set(table)
    assert all(plugin.endswith("onnx_compat.converters") for key, (_, plugin) in table.items()
               if key in {c.key for c in _all()})


@pytest.mark.parametrize(("op", "version"), sorted(ALIASES))
def test_alias_has_the_same_signature_as_its_target(op, version):
    """An alias hands a new op version to an older converter: inputs, outputs and attributes must match."""
    new, old = defs.get_schema(op, version, ""), defs.get_schema(op, ALIASES[op, version], "")
    assert new.since_version == version
    assert [i.name for i in new.inputs] == [i.name for i in old.inputs]
    assert [o.name for o in new.outputs] == [o.name for o in old.outputs]
    extra = set(new.attributes) ^ set(old.attributes)
    assert extra <= LEGACY_ATTRIBUTES.get((op, version), set()) | {"consumed_inputs"}


def test_every_op_version_up_to_opset_23_of_a_converted_op_has_a_converter():
    """Each op onnx2torch knows at some version converts at every opset from 11 to 23 (bar listed gaps)."""
    known_gaps = {"Cast@24", "RoiAlign", "NonMaxSuppression"}  # torchvision-dependent or newer than onnxruntime
    missing = []
    ops = {k[1] for k in registry.builtin_keys() if k[0] == ""}
    with registry.installed(_all()):
        for op in sorted(ops):
            for opset in range(11, 24):
                if registry.since_version(op, opset) is None or op in known_gaps:
                    continue
                if registry.find(op, opset) is None:
                    missing.append(f"{op}@{registry.since_version(op, opset)}")
    assert not sorted(set(missing))


def test_third_party_converter_for_a_custom_domain(save_onnx):
    class Double(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 2 * x

    class Plugin:
        @vizcore.hookimpl
        def vizcore_add_onnx_converters(self) -> list[Converter]:
            return [Converter("Double", 1, lambda node, graph: result(Double(), node), domain="acme.ops")]

    node = helper.make_node("Double", ["x"], ["y"], domain="acme.ops", name="twice")
    model = make_onnx([helper.make_node("Relu", ["x0"], ["x"]), node], [tensor("x0", [1, 3])], [tensor("y", [1, 3])],
                      opset=17)
    model.opset_import.append(helper.make_opsetid("acme.ops", 1))
    path = save_onnx(model)

    def left_out(m: vizcore.Model) -> bool:  # without the converter the graph is cut in front of the custom op
        return [(n, op) for n, op, why in m.unreachable] == [("twice", "Double")] and "acme.ops::Double" in \
            m.unreachable[0][2] and "twice" not in [l.name for l in m.layers]

    assert left_out(vizcore.load(path))
    manager = Manager(Settings(autoload=False))
    manager.register(Plugin(), name="acme")
    m = vizcore.load(path, plugins=manager)
    x = torch.tensor([[-1.0, 0.5, 2.0]])
    assert torch.equal(m.run(x), 2 * torch.relu(x))
    assert m.layer("twice").op_type == "Double"
    # the converter belongs to that manager only: the default manager, and a fresh one, do not see it
    assert left_out(vizcore.load(path))
    del manager
    assert left_out(vizcore.load(path, plugins=Manager(Settings(autoload=False))))


def test_a_plugin_override_does_not_outlive_its_manager(save_onnx):
    """A plugin that overrides a built-in converter (Relu -> 3x) changes only the loads given its manager."""
    from onnx2torch.node_converters import registry as o2t

    class Triple(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 3 * x

    class Plugin:
        @vizcore.hookimpl
        def vizcore_add_onnx_converters(self) -> list[Converter]:
            return [Converter("Relu", 14, lambda node, graph: result(Triple(), node), override=True)]

    model = make_onnx([helper.make_node("Relu", ["x"], ["y"])], [tensor("x", [1, 3])], [tensor("y", [1, 3])],
                      opset=17)
    path = save_onnx(model)
    table = dict(o2t._CONVERTER_REGISTRY)
    manager = Manager(Settings(autoload=False))
    manager.register(Plugin(), name="triple")
    x = torch.tensor([[-1.0, 0.5, 2.0]])
    assert torch.equal(vizcore.load(path, plugins=manager).run(x), 3 * x)
    assert o2t._CONVERTER_REGISTRY == table  # onnx2torch's table is as it was
    assert torch.equal(vizcore.load(path).run(x), torch.relu(x))


def test_converter_decorator_collects_into_module_list():
    namespace: dict = {}
    exec("from vizcore.onnx_compat import converter\n"  # noqa: S102 - a throwaway module namespace
         "@converter('Foo', 3, 5, domain='acme')\ndef f(node, graph):\n    return None\n", namespace)
    assert [(c.key, c.fn) for c in namespace["CONVERTERS"]] == [("acme::Foo@3", namespace["f"]),
                                                                ("acme::Foo@5", namespace["f"])]
    assert converter


def test_opset_22_conv_and_pool_convert(save_onnx):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("MaxPool", ["c"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("AveragePool", ["p"], ["y"], kernel_shape=[2, 2], strides=[2, 2])]
    model = make_onnx(nodes, [tensor("x", [2, 3, 8, 8])], [tensor("y", [2, 4, 2, 2])], [w], ["w"], opset=22)
    path = save_onnx(model)
    m = vizcore.load(path)
    x = rng.random((2, 3, 8, 8), dtype=np.float32)
    (ref,) = ort_run(path, {"x": x})
    np.testing.assert_allclose(m.run(torch.from_numpy(x)).numpy(), ref, atol=1e-5)


def test_onnx_model_is_untouched_by_conversion(tmp_path, cnn_onnx):
    path = cnn_onnx()
    before = path.read_bytes()
    vizcore.load(path)
    assert path.read_bytes() == before
    assert onnx.load(str(path)).graph.node[0].name != "n0"
