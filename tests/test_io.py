"""The two output helpers every writer uses: progress on stderr, atomic writes."""

import doctest
import io
import os

import pytest

from exportable_loss import _io


def test_docstring_examples():
    result = doctest.testmod(_io, verbose=False)
    assert result.attempted > 0 and result.failed == 0


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_is_a_live_bar_on_a_terminal_and_plain_lines_in_a_log():
    terminal, log = _Terminal(), io.StringIO()
    for stream in (terminal, log):
        progress = _io.Progress(25, "job", stream=stream)
        for i in range(25):
            progress.step(f"cell {i}")
    assert terminal.getvalue().count("\r") == 25 and terminal.getvalue().endswith("\n")
    assert "[##############################] 25/25" in terminal.getvalue()
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue() and len(lines) == 10  # one line per tenth of the work
    assert lines[-1].startswith("job: 25/25 (") and lines[-1].endswith(") cell 24")


def test_an_error_leaves_nothing_and_names_the_users_path(tmp_path):
    path = str(tmp_path / "out.json")
    with pytest.raises(RuntimeError, match="the writer failed"):
        with _io.atomic_path(path) as tmp:
            with open(tmp, "w") as f:
                f.write("partial")
            raise RuntimeError("the writer failed")
    assert os.listdir(tmp_path) == []
    (tmp_path / "sub").mkdir()
    with pytest.raises(OSError, match=f"^\\[Errno 28\\] cannot write {path}: No space left on device$"):
        with _io.atomic_path(path) as tmp:
            raise OSError(28, "No space left on device", tmp)  # as a full disk would, naming the temp file
    assert sorted(os.listdir(tmp_path)) == ["sub"]
    for bad, message in [("", "the output path is empty"), (str(tmp_path / "sub"), "is a folder; give a file name")]:
        with pytest.raises(ValueError, match=message):
            _io.write_text(bad, "x")
