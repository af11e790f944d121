"""The run folder: its file names, and the lock one training holds on it.

Rank 0 holds an OS lock on train.lock (with its PID and host) for the whole training, so a
second training on the same folder fails at once; under the lock, the temporary files that
killed writes left are deleted, and starting over deletes the previous run's files.
An --out that cannot be a folder (a file, a dangling link) is a UsageError; a folder the OS does
not let us write (read-only, full) a StorageError, both before anything is trained.
"""
import contextlib
import json
import os

from mibcore._io import atomic_write_text, remove_temporaries
from mibcore.errors import RunLockedError, UsageError, storage_errors

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
    make_run_folder(config.out)
    with lock_run_folder(config.out):
        with storage_errors(config.out, "clean it up"):
            remove_temporaries(config.out)
            if not config.resume:
                for name in RUN_FILES:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(os.path.join(config.out, name))
        yield


def make_run_folder(out):
    """Creates the folder `out` (and its parents) where it is not there yet."""
    if os.path.islink(out) and not os.path.exists(out):
        raise UsageError(f"--out {out!r} is a link to {os.readlink(out)!r}, which does not exist; "
                         "create that folder or use another --out")
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"--out {out!r} is a file, not a run folder; use another --out")
    try:
        with storage_errors(out, "create the run folder"):
            os.makedirs(out, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as e:  # a file (or dangling link) in the path
        raise UsageError(f"--out {out!r} cannot be a folder ({e.strerror}: a part of its path is a file)") from e


@contextlib.contextmanager
def lock_run_folder(folder):
    """An exclusive OS lock (flock) on folder/train.lock, which holds the holder's PID and host;
    RunLockedError at once when another process holds it. The OS releases it when the process
    ends, however it ends."""
    import fcntl
    import socket

    path = os.path.join(folder, LOCK)
    with storage_errors(path, "create the lock file"):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
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
