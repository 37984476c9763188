"""The model zoo: a registry of backbones (frozen config + builder) for every other stage.

The registry is the one list of backbones. Registering one is the only step needed to train it
(`benchmark.py --all --models NAME`, or its group: every registered backbone is an entry), to
have it in the ensembles (kind "backbone", the default) and in the report:

    import zoo
    zoo.register(zoo.BackboneConfig(name="my_net", display_name="MyNet", input_size=224,
                                    min_size=32, preprocessing="unit", weights_url=None,
                                    weights_file=None, weights_hash=None, hash_algorithm=None,
                                    weights_format=None, params_1000=0, paper="...",
                                    licence="...", pretrained=True, family="MyNet",
                                    group="mine"),  # --models mine
                 zoo.Builder(base=build_my_net))  # build_my_net(input_shape) -> keras.Model
                                                  # named "backbone"; import Keras inside it

From outside the package (so that the `--all` worker processes register it too): name the
module in `DERMBENCH_BACKBONES=module[,module...]` (importable, e.g. through PYTHONPATH), or
declare it in the `dermbench.backbones` entry-point group of an installed package
(`zoo.plugins`). They are loaded when `zoo` is imported, after the package's own (`zoo.catalog`:
the study's five and its CNN, group "paper"; seven later networks, group "modern").

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
from zoo.plugins import load_plugins
from zoo.registry import (
    BackboneConfig,
    Builder,
    get_config,
    list_backbones,
    list_groups,
    register,
    registered_kind,
)

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
    "list_groups",
    "param_counts",
    "register",
    "registered_kind",
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


# Last, so that a plugin importing `zoo` finds every name above.
load_plugins()
