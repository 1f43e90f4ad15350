"""The output helpers every writer of the package uses: progress on stderr, files written
atomically with the usual permissions, and C++ notes kept off stderr.

* ``Progress``: a live bar on a terminal; plain lines (one per tenth of the work) when
  stderr is a log file or a pipe, so a CI log holds no carriage returns.
* ``atomic_path`` / ``write_text``: the file appears whole or not at all (written to a
  temporary file in the destination folder, then renamed), with mode ``0o666 & ~umask`` (0644
  under umask 022) as ``open()`` would give; every message names the caller's path, never the
  temporary file's.
* ``stderr_without``: drops the lines a C++ library prints on file descriptor 2 that are not the
  user's concern (the profiler's "USDT:" notes, ExecuTorch's CPU probing).
"""

import contextlib
import os
import sys
import tempfile
import time
from typing import Iterator, Optional, Sequence, TextIO


class Progress:
    """Progress of ``total`` steps on ``stream`` (default stderr).

    Examples:
        >>> import io
        >>> log = io.StringIO()  # not a terminal: plain lines
        >>> progress = Progress(3, "demo", stream=log)
        >>> for label in ("a", "b", "c"):
        ...     progress.step(label)
        >>> print(log.getvalue().replace("(0s) ", ""), end="")
        demo: 1/3 a
        demo: 2/3 b
        demo: 3/3 c
    """

    WIDTH = 30

    def __init__(self, total: int, title: str, stream: Optional[TextIO] = None) -> None:
        self.total, self.title, self.done = total, title, 0
        self.stream = stream if stream is not None else sys.stderr
        self.live = self.stream.isatty()
        self.start = time.time()
        self._tenths = 0

    def step(self, label: str = "") -> None:
        """One step done; ``label`` says which."""
        self.done += 1
        elapsed = time.time() - self.start
        if self.live:
            filled = self.WIDTH * self.done // max(self.total, 1)
            bar = "#" * filled + "." * (self.WIDTH - filled)
            self.stream.write(f"\r{self.title} [{bar}] {self.done}/{self.total} {elapsed:5.0f}s {label[:40]:<40}")
            if self.done >= self.total:
                self.stream.write("\n")
        else:
            tenths = 10 * self.done // max(self.total, 1)
            if tenths == self._tenths and self.done < self.total:
                return
            self._tenths = tenths
            self.stream.write(f"{self.title}: {self.done}/{self.total} ({elapsed:.0f}s) {label}\n")
        self.stream.flush()


def _umask() -> int:
    mask = os.umask(0)  # the only portable way to read it; restored at once
    os.umask(mask)
    return mask


def check_writable(path: str) -> str:
    """The absolute folder of ``path`` after checking that a file can be written there;
    ``ValueError`` naming ``path`` otherwise."""
    if not path:
        raise ValueError("the output path is empty")
    if os.path.isdir(path):
        raise ValueError(f"the output path {path} is a folder; give a file name")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ValueError(f"cannot write {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write {path}: the folder {folder} is not writable")
    return folder


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """A temporary path next to ``path`` to write (and read back); on success it becomes
    ``path`` with the usual permissions, on any error it is removed.

    Examples:
        >>> import tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "x.txt")
        >>> with atomic_path(path) as tmp:
        ...     with open(tmp, "w") as f:
        ...         _ = f.write("hello")
        >>> open(path).read(), oct(os.stat(path).st_mode & 0o777) == oct(0o666 & ~_umask())
        ('hello', True)
    """
    folder = check_writable(path)
    stem, suffix = os.path.splitext(os.path.basename(path))
    # hidden, and with the destination's extension: some writers (torch.export.save) check it
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{stem}.", suffix=suffix)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600
        os.replace(tmp, path)
    except OSError as e:
        raise OSError(e.errno, f"cannot write {path}: {e.strerror or e}") from e
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text(path: str, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)


@contextlib.contextmanager
def stderr_without(prefixes: Sequence[str]) -> Iterator[None]:
    """Drop the lines starting with one of ``prefixes`` that anything (C++ included) writes on
    file descriptor 2 meanwhile; every other line is written to ``sys.stderr`` afterwards."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            lines = capture.read().decode(errors="replace").splitlines(True)
            sys.stderr.write("".join(line for line in lines if not line.startswith(tuple(prefixes))))
