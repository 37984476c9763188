"""The model zoo: a registry of backbones (frozen config + builder) for every other stage.

`list_backbones`, `get_config` and `register` work without importing Keras; `create_backbone`,
`count_flops` and `param_counts` import it on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from zoo.catalog import register_all
from zoo.errors import (
    DuplicateBackboneError,
    WeightsError,
    WeightsUnavailableError,
    ZooValueError,
)
from zoo.registry import BackboneConfig, Builder, get_config, list_backbones, register

__all__ = [
    "BackboneConfig",
    "Builder",
    "DuplicateBackboneError",
    "WeightsError",
    "WeightsUnavailableError",
    "ZooValueError",
    "count_flops",
    "create_backbone",
    "get_config",
    "list_backbones",
    "param_counts",
    "register",
]

register_all()


_LAZY = {
    "create_backbone": "zoo.factory",
    "param_counts": "zoo.factory",
    "count_flops": "zoo.flops",
}


def __getattr__(name: str) -> Any:
    """Import the Keras-dependent functions on first use (PEP 562), keeping `import zoo` light."""
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'zoo' has no attribute {name!r}")
