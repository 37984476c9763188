"""Two tiny backbones registered from outside dermbench, as a user's plug-in would be.

The end-to-end tests that check orchestration (grids, executors, plug-in registration) train these
instead of a Keras application: the same worker, phases, checkpoints, predictions and ensembles,
in a fraction of the time. Loaded through `DERMBENCH_BACKBONES=dermbench_tiny_backbones` with this
folder on PYTHONPATH (the `tiny_backbones_env` fixture of tests/conftest.py).
"""

import zoo

TINY_BACKBONES = ("tiny_plugin_a", "tiny_plugin_b")


def _base(filters):
    def build(input_shape):
        import keras  # inside the builder: `import zoo` stays free of Keras

        inputs = keras.Input(input_shape)
        x = keras.layers.Conv2D(filters, 3, strides=2, padding="same", activation="relu")(inputs)
        x = keras.layers.Conv2D(filters, 3, strides=2, padding="same", activation="relu")(x)
        return keras.Model(inputs, x, name="backbone")

    return build


for _name, _filters in zip(TINY_BACKBONES, (8, 12), strict=True):
    zoo.register(
        zoo.BackboneConfig(
            name=_name, display_name=_name, input_size=64, min_size=32, preprocessing="unit",
            weights_url=None, weights_file=None, weights_hash=None, hash_algorithm=None,
            weights_format=None, params_1000=0, paper="a test plug-in", licence="test",
            pretrained=True),
        zoo.Builder(base=_base(_filters)))
