"""Backbones registered from outside the package, loaded when the registry loads (`import zoo`).

Two ways, both reaching every process that imports the zoo (the `--all` workers included):

- the environment variable `DERMBENCH_BACKBONES=module[,module...]`: each module is imported (it
  must be importable there, e.g. through PYTHONPATH) and registers its backbones with
  `zoo.register(...)` when imported;
- the entry-point group `dermbench.backbones` of an installed distribution: each entry point is
  loaded; a module registers on import, and a callable (`module:function`) is called with no
  arguments to register.

A plugin should import Keras inside its builder only, so that `import zoo` stays free of it.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os

from zoo.errors import ZooValueError

PLUGINS_ENV = "DERMBENCH_BACKBONES"
ENTRY_POINT_GROUP = "dermbench.backbones"


def plugin_modules(value: str | None = None) -> list[str]:
    """The module names listed in $DERMBENCH_BACKBONES (or `value`), in order, without blanks."""
    value = os.environ.get(PLUGINS_ENV, "") if value is None else value
    return [name.strip() for name in value.split(",") if name.strip()]


def load_plugins() -> list[str]:
    """Import the backbone modules of $DERMBENCH_BACKBONES and load the entry points.

    Returns:
        What was loaded: the module names, then the entry points' values.

    Raises:
        ZooValueError: a module or entry point that cannot be imported or fails while
            registering (the message names it and the variable or group).
    """
    loaded = []
    for name in plugin_modules():
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - any failure of a plugin is reported the same way
            raise ZooValueError(
                f"${PLUGINS_ENV}: the backbone module {name!r} failed to load "
                f"({type(exc).__name__}: {exc}); make it importable (PYTHONPATH) or remove it "
                f"from {PLUGINS_ENV}"
            ) from exc
        loaded.append(name)
    for point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            target = point.load()
            if callable(target):
                target()
        except Exception as exc:  # noqa: BLE001
            raise ZooValueError(
                f"entry point {point.name!r} ({point.value}) of group {ENTRY_POINT_GROUP!r} "
                f"failed to load ({type(exc).__name__}: {exc}); fix or uninstall the package "
                "that declares it"
            ) from exc
        loaded.append(point.value)
    return loaded
