"""The plugin manager: registers vizcore's built-ins and the entry-point plugins through the same hooks.

Entry points: group `vizcore`. `VIZCORE_DISABLE_PLUGIN_AUTOLOAD=1` skips entry points (as pytest's
PYTEST_DISABLE_PLUGIN_AUTOLOAD); `VIZCORE_DISABLE_PLUGINS=a,b` or `--disable-plugin` skips named plugins;
`VIZCORE_STRICT_PLUGINS=1` or `--strict` makes a broken plugin fatal instead of a one-line warning.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pluggy

from . import hookspecs
from ._version import __version__
from .errors import PluginError, oneline, unknown_name

ENTRY_POINT_GROUP = "vizcore"

#: Modules that define vizcore's own objectives, params, ... and register them with @hookimpl.
BUILTIN_MODULES = (
    "vizcore.objectives",
    "vizcore.params",
    "vizcore.transforms",
    "vizcore.regularizers",
    "vizcore.exporters.png",
    "vizcore.exporters.manifest",
    "vizcore.exporters.exemplars",
    "vizcore.exporters.alpha",
    "vizcore.onnx_compat.prepasses",
    "vizcore.onnx_compat.qdq",
    "vizcore.onnx_compat.loops",
    "vizcore.onnx_compat.precision",
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

#: Contribution kinds whose hook returns a list of objects with a `.key` rather than a dict name -> factory.
_LIST_KINDS = ("converters", "prepasses")

F = TypeVar("F", bound=Callable[..., Any])


def override(factory: F) -> F:
    """Mark a factory as deliberately replacing another plugin's (or a built-in's) factory of the same name.

    Without it two plugins giving one name is an error. At most one plugin may override a given name.
    """
    factory.override = True  # type: ignore[attr-defined]
    return factory


@dataclass
class PluginInfo:
    """One plugin as `vizcore plugins` reports it; `adds` is kind -> names, filled by `Manager.describe`."""

    name: str
    version: str
    source: str  # "builtin" | "entry point" | "registered"
    package: str = ""  # the distribution (entry points) or module it comes from
    status: str = "ok"  # "ok" | "disabled" | "failed"
    error: str = ""
    adds: dict[str, list[str]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the rows of `vizcore plugins --json`)."""
        return {"name": self.name, "version": self.version, "source": self.source, "package": self.package,
                "status": self.status, "error": self.error or None, "adds": self.adds}


@dataclass
class Settings:
    """How plugins are loaded; the CLI fills it from flags, the API from the environment."""

    autoload: bool = True
    disabled: frozenset[str] = frozenset()
    strict: bool = False

    @classmethod
    def from_env(cls) -> Settings:
        """Settings from VIZCORE_DISABLE_PLUGIN_AUTOLOAD, VIZCORE_DISABLE_PLUGINS and VIZCORE_STRICT_PLUGINS."""
        env = os.environ
        return cls(
            autoload=env.get("VIZCORE_DISABLE_PLUGIN_AUTOLOAD", "") in ("", "0"),
            disabled=frozenset(n.strip() for n in env.get("VIZCORE_DISABLE_PLUGINS", "").split(",") if n.strip()),
            strict=env.get("VIZCORE_STRICT_PLUGINS", "") not in ("", "0"),
        )


def _warn(message: str) -> None:
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True).print(f"[yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)


def _norm(name: str) -> str:
    """A distribution name normalized as pip does (vizcore_gif == vizcore-gif == Vizcore.Gif)."""
    return re.sub(r"[-_.]+", "-", name).lower()


class Manager:
    """pluggy's PluginManager plus what vizcore needs around it: provenance, clash checks, safe calls.

    A plugin that fails (import, validation, a raising hook) is reported in one line, unregistered and skipped,
    or raises `PluginError` when `settings.strict`.
    """

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings.from_env()
        self.pm = pluggy.PluginManager("vizcore")
        self.pm.add_hookspecs(hookspecs)
        self.info: dict[str, PluginInfo] = {}
        self._registries: dict[str, dict[str, tuple[Any, str]]] = {}
        self._overrides: dict[str, dict[str, str]] = {}  # kind -> name -> the plugin whose factory was replaced
        version = __version__
        for modname in BUILTIN_MODULES:
            self._add(importlib.import_module(modname), PluginInfo(modname, version, "builtin", modname))
        if self.settings.autoload:
            self._load_entry_points()

    # -- registration -------------------------------------------------------------------------------------
    def _disabled(self, *names: str) -> bool:
        wanted = {_norm(n) for n in self.settings.disabled}
        return any(n and _norm(n) in wanted for n in names)

    def _add(self, obj: Any, info: PluginInfo) -> None:
        """Register `obj` under `info.name` after validating it; a failure goes through `_fail`."""
        self.info[info.name] = info
        if self._disabled(info.name, info.package):
            info.status = "disabled"
        elif info.source == "builtin":  # a broken built-in is a bug in vizcore: let it raise
            self._validate_and_register(obj, info.name, builtin=True)
        else:
            try:
                self._validate_and_register(obj, info.name)
            except Exception as exc:
                self._fail(info.name, exc, "is not a valid plugin")

    def _validate_and_register(self, obj: Any, name: str, builtin: bool = False) -> None:
        """pluggy's registration (which checks each hookimpl's arguments) plus vizcore's checks; all or nothing."""
        if self.pm.is_registered(obj):
            raise PluginError(f"this object is already registered as {self.pm.get_name(obj)!r}")
        self.pm.register(obj, name=name)
        self._registries.clear()
        callers = self.pm.get_hookcallers(obj) or []
        problems = [f"unknown hook {c.name!r} (see vizcore/hookspecs.py for the names)" for c in callers
                    if not c.has_spec()]
        problems += [f"{c.name} is a wrapper; vizcore calls each plugin's hooks directly" for c in callers
                     for i in c.get_hookimpls() if i.plugin is obj and (i.wrapper or i.hookwrapper)]
        if not callers and not builtin:
            problems.append("it has no @vizcore.hookimpl functions")
        if problems:
            self.pm.unregister(obj)
            raise PluginError("; ".join(problems))

    def register(self, obj: Any, name: str | None = None) -> None:
        """Register a plugin object at run time (tests, notebooks); it joins every registry.

        Unlike entry points, a plugin registered here that is invalid raises `PluginError` at once.
        """
        name = name or getattr(obj, "__name__", None) or repr(obj)
        if name in self.info and self.info[name].status == "ok":
            raise PluginError(f"a plugin named {name!r} is already registered", "pass another name=")
        try:
            self._validate_and_register(obj, name)
        except Exception as exc:
            raise PluginError(f"plugin {name!r} is not a valid plugin: {_oneline(exc)}") from exc
        self.info[name] = PluginInfo(name, str(getattr(obj, "__version__", "-")), "registered",
                                     getattr(obj, "__name__", type(obj).__name__))

    def unregister(self, name: str) -> None:
        """Remove a plugin by name (the inverse of `register`)."""
        if self.pm.get_plugin(name) is not None:
            self.pm.unregister(name=name)
        self.info.pop(name, None)
        self._registries.clear()

    def _fail(self, plugin: str, exc: BaseException, what: str, disable: str | None = None) -> None:
        """Report a broken plugin in one line and carry on without it (or raise when strict)."""
        msg = f"plugin {plugin!r} {what}: {_oneline(exc)}"
        if self.settings.strict:
            raise PluginError(msg, "fix or uninstall the plugin, or run without --strict") from exc
        if self.pm.get_plugin(plugin) is not None:
            self.pm.unregister(name=plugin)
        self._registries.clear()
        info = self.info.setdefault(plugin, PluginInfo(plugin, "-", "?"))
        info.status, info.error = "failed", msg
        _warn(f"{msg} (skipped; --disable-plugin {disable or plugin} silences this)")

    def _load_entry_points(self) -> None:
        for ep in md.entry_points(group=ENTRY_POINT_GROUP):
            dist = ep.dist.name if ep.dist is not None else ep.value.split(":")[0]
            info = PluginInfo(ep.name, ep.dist.version if ep.dist is not None else "-", "entry point", dist)
            if self._disabled(ep.name, dist):
                info.status = "disabled"
                self.info.setdefault(ep.name, info)
                continue
            owner = self.info.get(ep.name)
            if owner is not None and owner.status != "disabled":
                if owner.package != dist:  # (the same distribution twice on sys.path is harmless)
                    self._fail(f"{ep.name} ({dist})", PluginError(f"the name is taken by {owner.package!r}"),
                               "was not loaded", disable=dist)
                continue
            try:
                obj = ep.load()
            except Exception as exc:  # a bad plugin must never take the tool down
                self.info[ep.name] = info
                self._fail(ep.name, exc, "failed to load")
                continue
            self._add(obj, info)

    # -- registries -----------------------------------------------------------------------------------------
    def _collect(self, kind: str) -> dict[str, list[tuple[Any, str]]]:
        """name -> every (factory, plugin) contributing it, calling each plugin's hook; broken plugins skipped."""
        hook = getattr(self.pm.hook, KINDS[kind])
        while True:
            found: dict[str, list[tuple[Any, str]]] = {}
            failed = False
            for impl in hook.get_hookimpls():  # registration order: built-ins first
                try:
                    items = _items(kind, impl.function())
                except Exception as exc:
                    self._fail(impl.plugin_name, exc, f"raised in {KINDS[kind]}")
                    failed = True  # it is unregistered now: start again without it
                    break
                for name, factory in items:
                    found.setdefault(name, []).append((factory, impl.plugin_name))
            if not failed:
                return found

    def _resolve(self, kind: str, name: str, entries: list[tuple[Any, str]]) -> tuple[tuple[Any, str], str | None]:
        """The winning (factory, plugin) for one name and the plugin it overrode; a clash raises PluginError."""
        plugins = list(dict.fromkeys(p for _, p in entries))
        winners = [e for e in entries if getattr(e[0], "override", False)] or entries
        if len({p for _, p in winners}) > 1:
            both = [p for p in plugins if p in {w[1] for w in winners}]
            raise PluginError(
                f"{kind[:-1]} {name!r} is defined by both {both[0]!r} and {both[1]!r}",
                "uninstall or --disable-plugin one of them, or mark the replacement with vizcore.plugins.override "
                "(see docs/plugins.md)")
        winner = winners[-1]
        replaced = next((p for p in plugins if p != winner[1]), None)
        return winner, replaced

    def registry(self, kind: str) -> dict[str, tuple[Any, str]]:
        """name -> (factory, plugin name) for one kind ("objectives", "params", ...); clashes raise PluginError."""
        if kind not in KINDS:
            raise unknown_name("plugin kind", kind, KINDS)
        if kind not in self._registries:
            table: dict[str, tuple[Any, str]] = {}
            overrides: dict[str, str] = {}
            for name, entries in self._collect(kind).items():
                table[name], replaced = self._resolve(kind, name, entries)
                if replaced:
                    overrides[name] = replaced
            self._registries[kind], self._overrides[kind] = table, overrides
        return self._registries[kind]

    def get(self, kind: str, name: str) -> Any:
        """The factory registered under `name` for `kind`, or an OptionError listing the valid names."""
        table = self.registry(kind)
        if name not in table:
            raise unknown_name(kind[:-1], name, table)
        return table[name][0]

    def names(self, kind: str) -> list[str]:
        """Every name registered for `kind`, sorted."""
        return sorted(self.registry(kind))

    # -- lifecycle ------------------------------------------------------------------------------------------
    def call(self, hook_name: str, **kwargs: Any) -> None:
        """Call a lifecycle hook on every plugin; a plugin that raises is reported and skipped (or fatal if strict)."""
        for impl in reversed(getattr(self.pm.hook, hook_name).get_hookimpls()):  # pluggy's order: LIFO, tryfirst
            try:
                impl.function(**{k: kwargs[k] for k in impl.argnames})
            except Exception as exc:
                self._fail(impl.plugin_name, exc, f"raised in {hook_name}")

    def has_impls(self, hook_name: str) -> bool:
        """Whether any plugin implements a lifecycle hook (lets the engine skip work nobody wants)."""
        return bool(getattr(self.pm.hook, hook_name).get_hookimpls())

    # -- reporting ------------------------------------------------------------------------------------------
    def describe(self) -> tuple[list[PluginInfo], list[PluginError]]:
        """Every plugin (built-ins first) with what it adds, and the name clashes found, for `vizcore plugins`."""
        for info in self.info.values():
            info.adds = {}
        clashes: list[PluginError] = []
        for kind in KINDS:
            try:
                table = self.registry(kind)
            except PluginError as exc:  # list what we can; the caller reports the clash
                clashes.append(exc)
                continue
            overridden = self._overrides.get(kind, {})
            for name, (_, plugin) in sorted(table.items()):
                label = f"{name} (overrides {overridden[name]})" if name in overridden else name
                self.info.setdefault(plugin, PluginInfo(plugin, "-", "?")).adds.setdefault(kind, []).append(label)
        order = {"builtin": 0, "entry point": 1, "registered": 2}
        infos = sorted(self.info.values(), key=lambda i: (order.get(i.source, 3), i.name))
        return infos, clashes


def _items(kind: str, contributed: Any) -> Iterable[tuple[str, Any]]:
    """Check a contribution hook's return value and give it as (name, factory) pairs."""
    if contributed is None:
        return []
    if kind in _LIST_KINDS:
        if not isinstance(contributed, (list, tuple)) or not all(hasattr(c, "key") for c in contributed):
            raise TypeError(f"returned {type(contributed).__name__}; expected a list of "
                            f"vizcore.onnx_compat.{'Converter' if kind == 'converters' else 'Prepass'}")
        return [(c.key, c) for c in contributed]
    if not isinstance(contributed, dict):
        raise TypeError(f"returned {type(contributed).__name__}; expected a dict name -> factory")
    bad = [repr(k) for k, v in contributed.items() if not isinstance(k, str) or not k or not callable(v)]
    if bad:
        raise TypeError(f"entries {', '.join(bad)} are not a non-empty str name -> callable factory")
    return list(contributed.items())


def _oneline(exc: BaseException) -> str:
    """An exception as one line: its type and first line (pluggy's validation errors: the hook and the reason)."""
    if isinstance(exc, PluginError):
        return exc.message
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if isinstance(exc, pluggy.PluginValidationError) and len(lines) > 1:
        hook = lines[0].split(" for hook ")[-1]
        return f"hook {hook}: {lines[-1]}"
    return oneline(exc, 1000)


_manager: Manager | None = None


def default_manager() -> Manager:
    """The process's default plugin manager, created on first use from the environment's settings.

    Only the public API (`vizcore.api`) and the CLI call this; everything below takes a manager (or the tables it
    yields) as an argument.
    """
    global _manager
    if _manager is None:
        _manager = Manager()
    return _manager


#: The name earlier releases used (kept for plugin code and notebooks that register into the default manager).
get_manager = default_manager


def configure(settings: Settings) -> Manager:
    """Rebuild the process's default manager with explicit settings (the CLI's flags)."""
    global _manager
    _manager = Manager(settings)
    return _manager


def builtins_only() -> Manager:
    """A fresh manager with vizcore's built-ins and no entry-point plugins (a check's ascent uses one)."""
    return Manager(Settings(autoload=False))


def reset() -> None:
    """Forget the process's default manager (tests use it after changing the environment)."""
    global _manager
    _manager = None
