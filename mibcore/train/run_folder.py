"""The run folder: its file names, and the lock one training holds on it.

Rank 0 holds an OS lock on train.lock (with its PID and host) for the whole training, so a
second training on the same folder fails at once; under the lock, the temporary files that
killed writes left are deleted, and starting over deletes the previous run's files.
"""
import contextlib
import json
import os

from mibcore._io import atomic_write_text, remove_temporaries
from mibcore.errors import RunLockedError

CHECKPOINT = "checkpoint.pt"  # the resume checkpoint, rewritten after every epoch
BEST = "best.pt"              # the weights (and config) of the best dev epoch
HISTORY = "history.json"      # per epoch: train loss and dev metrics
METRICS = "metrics.json"      # the test metrics of the best dev epoch
CURVES = "curves.png"         # where matplotlib is installed
LOCK = "train.lock"
RUN_FILES = (CHECKPOINT, BEST, HISTORY, METRICS, CURVES)  # what starting over deletes


@contextlib.contextmanager
def claim_run_folder(config, rank):
    """On rank 0 (the one that writes): holds the lock of config.out while the run lasts, and
    under it deletes the temporary files of killed writes and, when not resuming, the files of
    the run that was there."""
    if rank != 0:
        yield
        return
    os.makedirs(config.out, exist_ok=True)
    with lock_run_folder(config.out):
        remove_temporaries(config.out)
        if not config.resume:
            for name in RUN_FILES:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(config.out, name))
        yield


@contextlib.contextmanager
def lock_run_folder(folder):
    """An exclusive OS lock (flock) on folder/train.lock, which holds the holder's PID and host;
    RunLockedError at once when another process holds it. The OS releases it when the process
    ends, however it ends."""
    import fcntl
    import socket

    fd = os.open(os.path.join(folder, LOCK), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 256, 0).decode(errors="replace").split() or ["?"]
            raise RunLockedError(f"{folder} is in use by another training (PID {' on '.join(holder[:2])}); "
                                 "wait for it to end or use another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def write_json(folder, name, obj):
    """folder/name as indented JSON, written atomically (a reader never sees half a file)."""
    atomic_write_text(os.path.join(folder, name), json.dumps(obj, indent=2, sort_keys=True))
