"""Crash-safe checkpoints of a search: every variable plus the loop's position, written atomically.

Why not `keras.callbacks.BackupAndRestore`: it overwrites its `.weights.h5` in place (a kill during the
write leaves a corrupt file; its `.bkp` copy is itself a non-atomic copy), writes weights and metadata in
two unsynchronised steps, and resumes only at the start of an epoch. Why not `tf.train.CheckpointManager`
alone: its index file is updated atomically but without `fsync`, and it has no place for the loop's
JSON state (epoch, step, history) that must change together with the variables.

What is used: `tf.train.Checkpoint.write` (TensorFlow's own tensor-bundle format, shard + index) for the
variables, then `fsync` of the written files, then an atomic pointer file ``latest.json`` (written to a
temporary file, fsync'ed, `os.replace`d, directory fsync'ed) that names the checkpoint and carries the JSON
state. A checkpoint exists only once ``latest.json`` names it, so a kill at any moment leaves either the
previous complete checkpoint or the new one. The previous checkpoints are deleted only after the pointer
has moved (``keep`` most recent are kept).

The variables are checkpointed as one ordered list (the model's variables, which in Keras 3 include the
metrics' accumulators and random-seed states, then each optimizer's variables); their paths and shapes are
stored in the state and checked on restore, so a checkpoint never silently lands in a different model.
"""

import json
import os
import re

import numpy as np
import tensorflow as tf

from unas_keras._atomic import write_text_atomic

POINTER = "latest.json"
FORMAT_VERSION = 1
_PREFIX_RE = re.compile(r"^ckpt-(\d+)$")


def _fsync_path(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some file systems do not support fsync on directories
        pass
    finally:
        os.close(fd)


def write_json_atomic(path, payload, sort_keys=False):
    """Writes JSON to `path` so that readers see the old or the new file, never a partial one.

    The text goes to a temporary file in the same folder, which is flushed, fsync'ed and renamed over
    `path` with `os.replace`; the folder is fsync'ed afterwards.

    Args:
        path: destination file.
        payload: a JSON-serialisable object.
        sort_keys: sort dictionary keys in the output.
    """
    path = os.fspath(path)
    write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=sort_keys) + "\n")
    _fsync_path(os.path.dirname(os.path.abspath(path)))


def read_json(path):
    """Reads a JSON file; raises ValueError naming the file if it is unreadable or malformed."""
    try:
        with open(path, "r", encoding="utf-8") as f:
            return json.load(f)
    except OSError as err:
        raise ValueError(f"Cannot read {path}: {err.strerror}") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None


def _describe(variables):
    return [[getattr(v, "path", None) or v.name, list(v.shape)] for v in variables]


class Checkpointer:
    """Atomic save / restore of a list of variables and a JSON-serialisable state.

    Args:
        directory: folder of the checkpoints (created on the first save).
        variables: the ordered list of variables to save and restore (Keras or TensorFlow variables,
            distributed ones included).
        keep: how many complete checkpoints to keep (>= 1; the newest is always kept).
        restore_directory: folder to restore from (default `directory`). In a multi-worker run the
            non-chief workers write to a private temporary folder but restore from the chief's.
    """

    def __init__(self, directory, variables, keep=2, restore_directory=None):
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}.")
        self.directory = os.fspath(directory)
        self.restore_directory = os.fspath(restore_directory or directory)
        self.variables = list(variables)
        self.keep = int(keep)
        self._checkpoint = tf.train.Checkpoint(variables=self.variables)

    # ------------------------------------------------------------------ reading
    def latest(self):
        """Returns the pointer of the newest complete checkpoint (a dict), or None if there is none.

        Raises:
            ValueError: if the pointer file exists but is unreadable, or names missing files.
        """
        path = os.path.join(self.restore_directory, POINTER)
        if not os.path.exists(path):
            return None
        pointer = read_json(path)
        if not isinstance(pointer, dict) or pointer.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{path}: not a unas_keras checkpoint pointer (format {FORMAT_VERSION}).")
        prefix = os.path.join(self.restore_directory, pointer["prefix"])
        if not os.path.exists(prefix + ".index"):
            raise ValueError(f"{path} names checkpoint {pointer['prefix']!r}, whose files are missing.")
        return pointer

    def restore(self, pointer=None):
        """Restores the variables from a checkpoint and returns its state dict.

        Args:
            pointer: a dict from `latest()`; default: the newest checkpoint.

        Returns:
            The `state` saved with the checkpoint, or None if there is no checkpoint.

        Raises:
            ValueError: if the checkpoint was written for differently shaped or ordered variables.
        """
        pointer = pointer or self.latest()
        if pointer is None:
            return None
        saved = pointer.get("variables")
        current = _describe(self.variables)
        if saved is not None and [s for _, s in saved] != [s for _, s in current]:
            raise ValueError(
                f"Checkpoint {pointer['prefix']!r} in {self.restore_directory} holds {len(saved)} variables "
                f"that do not match this model's {len(current)}; it was written by a different "
                f"configuration or version.")
        prefix = os.path.join(self.restore_directory, pointer["prefix"])
        self._checkpoint.read(prefix).assert_consumed()
        return pointer.get("state")

    # ------------------------------------------------------------------ writing
    def save(self, step, state):
        """Writes a checkpoint for `step` with `state`, atomically.

        Args:
            step: the global iteration count (names the checkpoint).
            state: a JSON-serialisable dict saved alongside the variables.

        Returns:
            The checkpoint prefix (path without extension).
        """
        os.makedirs(self.directory, exist_ok=True)
        name = f"ckpt-{int(step)}"
        prefix = os.path.join(self.directory, name)
        self._checkpoint.write(prefix)
        for fname in os.listdir(self.directory):
            if fname.startswith(name + "."):
                _fsync_path(os.path.join(self.directory, fname))
        _fsync_path(self.directory)
        previous = self._complete_names()
        names = [n for n in previous if n != name] + [name]
        write_json_atomic(os.path.join(self.directory, POINTER), {
            "format_version": FORMAT_VERSION,
            "prefix": name,
            "step": int(step),
            "complete": names[-self.keep:],
            "variables": _describe(self.variables),
            "state": state,
        })
        self._cleanup(names[-self.keep:])
        return prefix

    def _complete_names(self):
        path = os.path.join(self.directory, POINTER)
        if not os.path.exists(path):
            return []
        try:
            return list(read_json(path).get("complete", []))
        except ValueError:
            return []

    def _cleanup(self, keep_names):
        """Deletes checkpoint files not in `keep_names` (older ones and leftovers of interrupted saves)."""
        for fname in os.listdir(self.directory):
            base = fname.split(".", 1)[0]
            if _PREFIX_RE.match(base) and base not in keep_names:
                try:
                    os.remove(os.path.join(self.directory, fname))
                except OSError:
                    pass


def snapshot(variables):
    """Returns numpy copies of variables' values (e.g. metric accumulators to re-apply later)."""
    return [np.array(v.numpy()) for v in variables]


def assign_all(variables, values):
    """Assigns numpy values to variables, one to one."""
    for var, value in zip(variables, values):
        var.assign(value)
