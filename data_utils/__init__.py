"""Data layer: readers, download, validation, splits, decoded-image cache, batches, synthetic set.

Importing this package is cheap: it pulls in no TensorFlow/Keras.
"""
