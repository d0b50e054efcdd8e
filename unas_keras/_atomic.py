"""Atomic file writes: a reader (or a crash) never sees a half-written file."""

import os
import tempfile


def write_bytes_atomic(path, data):
    """Writes `data` to `path` through a temporary file in the same folder, fsync and rename.

    If anything fails, the previous content of `path` (if any) is untouched and
    the temporary file is removed.
    """
    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(data)

    return write_file_atomic(path, write)


def write_text_atomic(path, text):
    """`write_bytes_atomic` for UTF-8 text."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_file_atomic(path, writer):
    """Calls `writer(tmp_path)` on a temporary file beside `path`, then fsyncs and renames it over `path`.

    For writers that insist on a file name (`model.save`, `model.save_weights`): the temporary name ends
    with `path`'s base name, so suffix checks (`.keras`, `.weights.h5`) pass. On failure the previous file
    is untouched and the temporary file removed.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix="-" + os.path.basename(path))
    os.close(fd)
    try:
        writer(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path
