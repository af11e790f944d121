"""User errors: mistakes in a command line, a config, a data file or a run folder.

The CLI prints each as one line `mibcore: error: ...` and exits with the class's code (with
`--debug`, the traceback too); anything else is a bug and keeps its traceback. Each class also
derives from the builtin exception that code catching the old error expects (ValueError, ...).

  exit code  class             meaning
  2          UsageError        bad option, option value or config (argparse uses 2 too)
  3          DataError         a data file that is missing, unreadable or malformed (any split's
                               shapes, dtypes or labels outside mibcore.data.checks' contract,
                               checked at load, before training), declares more than the memory
                               allows (mibcore.data.budget), or holds labels no metric fits
                               (0/1 labels read as regression: mibcore.train.evaluation.label_fit),
                               or does not fit the run it is evaluated or predicted with
                               (feature widths or label columns: mibcore.train.best_model)
  4          CheckpointError   a checkpoint that is missing, damaged, of another config, or not
                               a best.pt where one is needed (eval, predict)
  5          DivergedError     training produced a loss or predictions that are not finite
  6          RunLockedError    another training holds the run folder
  7          StorageError      the OS refused a write: permission denied, read-only or full file system
  130        (Ctrl-C)          interrupted; the CLI says whether a rerun resumes (128 + SIGINT, as shells do)

mibcore.backends.BackendError (a backend that does not exist or cannot serve the tensors, an
unknown MIBCORE_BACKEND) is a UsageError: exit code 2.
"""
import contextlib
import errno


def first_line(error):
    """An exception's message cut to its first line (at most 200 characters), for one-line errors."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:200]


class UserError(Exception):
    exit_code = 1


class UsageError(UserError, ValueError):
    exit_code = 2


class DataError(UserError, ValueError):
    exit_code = 3


class CheckpointError(UserError, ValueError):
    exit_code = 4


class DivergedError(UserError, FloatingPointError):
    exit_code = 5


class RunLockedError(UserError, RuntimeError):
    exit_code = 6


class StorageError(UserError, OSError):
    exit_code = 7


# The errnos of an environment that refuses a write (not of a bug): what StorageError reports.
STORAGE_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


@contextlib.contextmanager
def storage_errors(path, doing="write it"):
    """Turns an OSError by which the environment refuses work on `path` (STORAGE_ERRNOS) into a
    StorageError: one line naming the path and the OS's reason. Other OSErrors (bugs) pass."""
    try:
        yield
    except UserError:
        raise
    except OSError as e:
        if e.errno not in STORAGE_ERRNOS:
            raise
        refused = StorageError(f"{path}: cannot {doing} ({e.strerror or e})")
        refused.errno = e.errno  # (OSError(errno, text) would print as "[Errno N] text")
        raise refused from e
