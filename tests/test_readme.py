"""Every Python snippet of the README runs as written (in a fresh namespace, in a temporary
folder), and what a snippet writes for mibcore to read, mibcore reads."""
import os
import re
import textwrap

import pytest

from mibcore.data import load_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _snippets():
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    blocks = re.findall(r"^( *)```python\n(.*?)^\1```", text, re.M | re.S)
    return [textwrap.dedent(block) for _, block in blocks]


def test_the_readme_has_python_snippets():
    assert len(_snippets()) >= 2


@pytest.mark.parametrize("index", range(len(_snippets())))
def test_readme_snippet_runs(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(_snippets()[index], f"README.md snippet {index}", "exec"), {"__name__": "__readme__"})
    for name in os.listdir(tmp_path):
        if name.endswith((".npz", ".h5")):
            data = load_dataset(str(tmp_path / name))
            assert all(len(data[split]["label"]) for split in ("train", "dev", "test"))
