"""Importing TensorFlow without its C++ start-up notices when the user asked for quiet.

TensorFlow's native start-up lines (oneDNN, CUDA stubs) are written to file
descriptor 2 before its logging is configured, so `TF_CPP_MIN_LOG_LEVEL` alone
does not hide them. When that variable asks for warnings-or-less
(`>= 2`, as the apps set it), the import runs with descriptor 2 pointed at
/dev/null; Python exceptions still propagate normally.
"""

import os
import sys


def import_tensorflow():
    """Imports TensorFlow, quietly if `TF_CPP_MIN_LOG_LEVEL >= 2`."""
    if "tensorflow" in sys.modules or os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0") < "2":
        import tensorflow  # noqa: F401
        return
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
