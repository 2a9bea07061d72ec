"""TensorFlow, started once per process without its start-up chatter on the terminal.

Importing TensorFlow and running its first operation print C++ log lines (oneDNN notices, a missing
CUDA driver, a failed cuInit on a machine without a GPU) straight to file descriptor 2, past Python's
logging: a demo's or a worker's log then starts with them. They are silenced by pointing descriptor 2
at /dev/null for those two steps only; MARROWLINK_TF_VERBOSE=1 keeps them for debugging a GPU set-up.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator

_STARTED = threading.Event()
_LOCK = threading.Lock()


@contextlib.contextmanager
def _stderr_silenced() -> Iterator[None]:
    if os.environ.get("MARROWLINK_TF_VERBOSE") == "1":
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def start_tensorflow() -> None:
    """Import TensorFlow and initialise its devices quietly (a no-op after the first call)."""
    if _STARTED.is_set():
        return
    with _LOCK:
        if _STARTED.is_set():
            return
        with _stderr_silenced():
            import tensorflow as tf

            tf.constant(0.0) + 0.0  # the first operation initialises the devices (and tries CUDA)
        _STARTED.set()
