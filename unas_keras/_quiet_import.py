"""Hiding TensorFlow's C++ start-up notices when the user asked for quiet.

TensorFlow's native start-up lines (oneDNN, CUDA stubs, CPU features) are
written to file descriptor 2 while `tensorflow` is being imported, before its
logging is configured, so `TF_CPP_MIN_LOG_LEVEL` alone does not hide them. When
that variable asks for warnings-or-less (`>= 2`, as the apps set it), the
import runs with descriptor 2 pointed at /dev/null; Python exceptions still
propagate normally. `unas_keras._import_hook` wraps TensorFlow's import in
`quiet_native_stderr()`, so TensorFlow stays quiet however it is first
imported after `import unas_keras`.
"""

import contextlib
import os
import sys


def wants_quiet():
    """Whether `TF_CPP_MIN_LOG_LEVEL` asks for warnings-or-less (read at call time)."""
    return os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0") >= "2"


@contextlib.contextmanager
def quiet_native_stderr():
    """Points file descriptor 2 at /dev/null for the block when `wants_quiet()`."""
    if not wants_quiet():
        yield
        return
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
