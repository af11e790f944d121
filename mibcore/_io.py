"""Atomic file writes: write to a temporary file beside the target, then rename, so that a
reader (or a crash) never sees a half-written file."""
import glob
import os
import tempfile

# Temporary files are named PREFIX*SUFFIX. (A name that does not start with "." : torch.save
# derives its archive name from it.)
TMP_PREFIX, TMP_SUFFIX = "tmp-", ".part"


def atomic_write(path, write):
    """Calls write(tmp_path) to fill a temporary file, then renames it to `path`."""
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path} is a directory")
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=TMP_PREFIX, suffix=TMP_SUFFIX)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; these are ordinary files
        os.replace(tmp, path)
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
