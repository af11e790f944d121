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
"""


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
