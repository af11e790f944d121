"""Atomic file writes: write to a temporary file beside the target, then rename, so that a
reader (or a crash) never sees a half-written file.

The target is the path with its symlinks resolved: writing through a link updates the file it
points to and keeps the link. A path that exists and is not a regular file (a directory, a
device, a fifo) is refused (UsageError), never replaced; the OS refusing the write (read-only,
full disk) is a StorageError naming the path."""
import errno
import glob
import os
import stat
import tempfile

from mibcore.errors import UsageError, storage_errors

# Temporary files are named PREFIX*SUFFIX. (A name that does not start with "." : torch.save
# derives its archive name from it.)
TMP_PREFIX, TMP_SUFFIX = "tmp-", ".part"

_NOT_FILES = ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device"),
              (stat.S_ISFIFO, "a fifo"), (stat.S_ISSOCK, "a socket"))


def output_target(path):
    """(the file a write to `path` replaces: its symlinks resolved, that file's mode or None
    where it is new). UsageError where it exists and is not a regular file, or its links loop."""
    target = os.path.realpath(path)
    through = f" (through links: {target})" if target != os.path.abspath(path) else ""
    try:
        mode = os.stat(target).st_mode
    except FileNotFoundError:
        return target, None
    except OSError as e:  # a link loop, a file where a folder should be, no permission
        with storage_errors(path):
            if e.errno in (errno.ELOOP, errno.ENOTDIR):
                raise UsageError(f"{path}: cannot write there ({e.strerror}){through}") from e
            raise
    for test, kind in _NOT_FILES:
        if test(mode):
            raise UsageError(f"{path} is {kind}{through}, not a file to write; name a new file or a regular one")
    return target, stat.S_IMODE(mode)


def atomic_write(path, write):
    """Calls write(tmp_path) to fill a temporary file beside `path`'s target (output_target),
    then renames it over that target. The file keeps its mode (a new one: 0644)."""
    target, mode = output_target(path)
    with storage_errors(path):
        os.makedirs(os.path.dirname(target), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(target), prefix=TMP_PREFIX, suffix=TMP_SUFFIX)
    os.close(fd)
    try:
        with storage_errors(path):
            write(tmp)
            os.chmod(tmp, 0o644 if mode is None else mode)  # mkstemp creates 0600
            os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path, text):
    def write(tmp):
        with open(tmp, "w") as f:
            f.write(text)

    atomic_write(path, write)


def atomic_write_bytes(path, data):
    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(data)

    atomic_write(path, write)


def remove_temporaries(directory):
    """Deletes the temporary files that interrupted atomic writes left in `directory` (a kill
    gives the cleanup above no chance to run). Only call it where no other process writes (the
    training engine does, holding the run folder's lock)."""
    for tmp in glob.glob(os.path.join(glob.escape(directory), TMP_PREFIX + "*" + TMP_SUFFIX)):
        os.unlink(tmp)
