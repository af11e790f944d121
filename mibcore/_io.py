"""Atomic file writes: write to a temporary file beside the target, then rename, so that a
reader (or a crash) never sees a half-written file."""
import os
import tempfile


def atomic_write(path, write):
    """Calls write(tmp_path) to fill a temporary file, then renames it to `path`."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    # (A name that does not start with "." : torch.save derives its archive name from it.)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="tmp-", suffix=".part")
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
