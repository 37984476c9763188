"""Exit codes of `benchmark.py` and of the training worker (`python -m training.worker`)."""

# benchmark.py
OK = 0
FAILED = 1  # a check failed (--check), or an entry/stage of --all failed; the rest went on
USER_ERROR = 2  # bad options, files or environment: one line on stderr says what to fix
INTERRUPTED = 130  # Ctrl-C; rerunning the same command resumes

# The training worker, read by `training.jobs`: 0 and 1 as above, plus
WORKER_OUT_OF_MEMORY = 3  # retried with half the batch size
WORKER_NAN = 4  # the loss became NaN or infinite: recorded as status "nan"
