"""Every default of the command line and of the run configuration, in one place.

benchmark.py's parser leaves options unset (None) and the configuration resolves them from these
values (or from the preset, for the training numbers: training.presets), so --help, the resolved
config in run.json and the stages never disagree.
"""

# Data and split
SPLIT = "lesion"
RATIOS: tuple[float, float, float] = (0.8, 0.1, 0.1)
TEST_SET = "split"
SEED = 0
SYNTHETIC_IMAGES = 700
RESIZE_MODE = "square"

# Execution of --all
EXECUTOR = "local"
JOBS = 1
RETRIES = 1

# Ensembles, reports and the regression gate
RANK_BY = "balanced_accuracy"
REFERENCE = "inception_resnet_v2"
BOOTSTRAP = 1000
TOLERANCE = 0.01
ALPHA = 0.05
