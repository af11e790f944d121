"""Optional dependencies, imported where a feature needs them: a missing one is one clear error
(UsageError, exit 2) naming the package and the extra that installs it, before any work is done."""
import importlib

# module -> (the package to install, the mibcore extra that has it)
OPTIONAL = {
    "h5py": ("h5py", "data"),
    "matplotlib": ("matplotlib", "plot"),
    "optuna": ("optuna", "tune"),
    "yaml": ("pyyaml", "yaml"),
}


def require(module, what):
    """The module, or UsageError: "`what` needs PACKAGE: pip install 'mibcore[EXTRA]'"."""
    try:
        return importlib.import_module(module)
    except ImportError:
        from mibcore.errors import UsageError

        package, extra = OPTIONAL[module]
        raise UsageError(f"{what} needs {package} (pip install 'mibcore[{extra}]', or pip install {package})") from None


def available(module):
    try:
        importlib.import_module(module)
        return True
    except ImportError:
        return False
