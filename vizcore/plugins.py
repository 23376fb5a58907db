"""The plugin manager: registers vizcore's built-ins and the entry-point plugins through the same hooks.

Entry points: group `vizcore`. `VIZCORE_DISABLE_PLUGIN_AUTOLOAD=1` skips entry points (as pytest's
PYTEST_DISABLE_PLUGIN_AUTOLOAD); `VIZCORE_DISABLE_PLUGINS=a,b` or `--disable-plugin` skips named plugins;
`VIZCORE_STRICT_PLUGINS=1` or `--strict` makes a broken plugin fatal instead of a one-line warning.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pluggy

from . import hookspecs
from .errors import PluginError, unknown_name

ENTRY_POINT_GROUP = "vizcore"

#: Modules that define vizcore's own objectives, params, ... and register them with @hookimpl.
BUILTIN_MODULES = (
    "vizcore.objectives",
    "vizcore.params",
    "vizcore.transforms",
    "vizcore.regularizers",
    "vizcore.exporters.png",
    "vizcore.exporters.manifest",
    "vizcore.onnx_compat.prepasses",
    "vizcore.onnx_compat.converters",
)

#: Contribution hooks and the kind of thing each adds, as `vizcore plugins` shows them.
KINDS = {
    "objectives": "vizcore_add_objectives",
    "params": "vizcore_add_params",
    "transforms": "vizcore_add_transforms",
    "regularizers": "vizcore_add_regularizers",
    "exporters": "vizcore_add_exporters",
    "converters": "vizcore_add_onnx_converters",
    "prepasses": "vizcore_add_prepasses",
}


@dataclass
class PluginInfo:
    """One registered plugin as `vizcore plugins` reports it."""

    name: str
    version: str
    source: str  # "builtin" | "entry point" | "registered"
    adds: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class Settings:
    """How plugins are loaded; the CLI fills it from flags, the API from the environment."""

    autoload: bool = True
    disabled: frozenset[str] = frozenset()
    strict: bool = False

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        return cls(
            autoload=env.get("VIZCORE_DISABLE_PLUGIN_AUTOLOAD", "") in ("", "0"),
            disabled=frozenset(n.strip() for n in env.get("VIZCORE_DISABLE_PLUGINS", "").split(",") if n.strip()),
            strict=env.get("VIZCORE_STRICT_PLUGINS", "") not in ("", "0"),
        )


def _warn(message: str) -> None:
    from rich.console import Console

    Console(stderr=True).print(f"[yellow]warning:[/] {message}", highlight=False)


class Manager:
    """pluggy's PluginManager plus what vizcore needs around it: provenance, clash checks, safe calls."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings.from_env()
        self.pm = pluggy.PluginManager("vizcore")
        self.pm.add_hookspecs(hookspecs)
        self.info: dict[str, PluginInfo] = {}
        self.broken: dict[str, str] = {}
        self._registries: dict[str, dict[str, tuple[Any, str]]] = {}
        for modname in BUILTIN_MODULES:
            self._register(importlib.import_module(modname), modname.replace("vizcore.", "builtin:"), "builtin",
                           _version())
        if self.settings.autoload:
            self._load_entry_points()

    # -- registration -------------------------------------------------------------------------------------
    def _register(self, obj: Any, name: str, source: str, version: str) -> None:
        if name in self.settings.disabled or name.split(":")[-1] in self.settings.disabled:
            return
        self.pm.register(obj, name=name)
        self.info[name] = PluginInfo(name, version, source)
        self._registries.clear()

    def register(self, obj: Any, name: str | None = None) -> None:
        """Register a plugin object at run time (tests, notebooks); it joins every registry."""
        name = name or getattr(obj, "__name__", None) or repr(obj)
        self._register(obj, name, "registered", getattr(obj, "__version__", "-"))

    def unregister(self, name: str) -> None:
        """Remove a plugin by name (the inverse of `register`)."""
        self.pm.unregister(name=name)
        self.info.pop(name, None)
        self._registries.clear()

    def _fail(self, plugin: str, exc: BaseException, what: str) -> None:
        msg = f"plugin {plugin!r} {what}: {type(exc).__name__}: {exc}"
        if self.settings.strict:
            raise PluginError(msg, "fix or uninstall the plugin, or run without --strict") from exc
        self.broken[plugin] = msg
        _warn(msg + " (skipped; --disable-plugin NAME silences this)")

    def _load_entry_points(self) -> None:
        for ep in md.entry_points(group=ENTRY_POINT_GROUP):
            if ep.name in self.settings.disabled or ep.name in self.info:
                continue
            try:
                obj = ep.load()
                version = ep.dist.version if ep.dist is not None else "-"
                self._register(obj, ep.name, "entry point", version)
            except Exception as exc:  # a bad plugin must never take the tool down
                self._fail(ep.name, exc, "failed to load")

    # -- registries -----------------------------------------------------------------------------------------
    def registry(self, kind: str) -> dict[str, tuple[Any, str]]:
        """name -> (factory, plugin name) for one kind ("objectives", "params", ...); clashes raise PluginError."""
        if kind in self._registries:
            return self._registries[kind]
        table: dict[str, tuple[Any, str]] = {}
        hook = getattr(self.pm.hook, KINDS[kind])
        for impl in reversed(hook.get_hookimpls()):  # registration order: built-ins first
            plugin = impl.plugin_name
            try:
                contributed = impl.function()
            except Exception as exc:
                self._fail(plugin, exc, f"raised in {KINDS[kind]}")
                continue
            items = contributed.items() if isinstance(contributed, dict) else ((c.key, c) for c in contributed or ())
            for name, factory in items:
                if name in table and table[name][1] != plugin and not getattr(factory, "override", False):
                    raise PluginError(
                        f"{kind[:-1]} {name!r} is defined by both {table[name][1]!r} and {plugin!r}",
                        f"uninstall one, disable one with --disable-plugin, or set override=True on {plugin}'s",
                    )
                table[name] = (factory, plugin)
            self.info.get(plugin, PluginInfo(plugin, "-", "?")).adds.setdefault(kind, []).extend(
                n for n, _ in (contributed.items() if isinstance(contributed, dict)
                               else ((c.key, c) for c in contributed or ())))
        self._registries[kind] = table
        return table

    def get(self, kind: str, name: str) -> Any:
        """The factory registered under `name` for `kind`, or an OptionError listing the valid names."""
        table = self.registry(kind)
        if name not in table:
            raise unknown_name(kind[:-1], name, table)
        return table[name][0]

    def names(self, kind: str) -> list[str]:
        """Every name registered for `kind`, sorted."""
        return sorted(self.registry(kind))

    def call(self, hook_name: str, **kwargs: Any) -> None:
        """Call a lifecycle hook on every plugin; a plugin that raises is reported and skipped (or fatal if strict)."""
        for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
            if impl.plugin_name in self.broken:
                continue
            try:
                impl.function(**{k: kwargs[k] for k in impl.argnames})
            except Exception as exc:
                self._fail(impl.plugin_name, exc, f"raised in {hook_name}")

    def has_impls(self, hook_name: str) -> bool:
        """Whether any plugin implements a lifecycle hook (lets the engine skip work nobody wants)."""
        return bool(getattr(self.pm.hook, hook_name).get_hookimpls())

    def describe(self) -> list[PluginInfo]:
        """Every plugin with what it adds, for `vizcore plugins`."""
        for kind in KINDS:
            for info in self.info.values():
                info.adds.pop(kind, None)
            self._registries.pop(kind, None)
            self.registry(kind)
        return sorted(self.info.values(), key=lambda i: (i.source != "builtin", i.name))


def _version() -> str:
    from . import __version__

    return __version__


_manager: Manager | None = None


def get_manager() -> Manager:
    """The process-wide plugin manager, created on first use from the environment's settings."""
    global _manager
    if _manager is None:
        _manager = Manager()
    return _manager


def configure(settings: Settings) -> Manager:
    """Rebuild the process-wide manager with explicit settings (the CLI's flags)."""
    global _manager
    _manager = Manager(settings)
    return _manager


def factory(kind: str, name: str) -> Callable[..., Any]:
    """Shorthand: the factory for `name` of `kind` from the process-wide manager."""
    return get_manager().get(kind, name)


def reset() -> None:
    """Forget the process-wide manager (tests use it after changing the environment)."""
    global _manager
    _manager = None
