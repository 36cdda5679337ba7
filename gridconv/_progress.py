"""A small progress bar for long work (training epochs, chunked filtering).

On a terminal it redraws one line in place; in a log (stderr not a TTY) it prints a line
at most every ``log_every`` seconds and at the end, so CI logs stay short.
"""

from __future__ import annotations

import sys
import time


def _fmt_time(seconds: float) -> str:
    seconds = int(round(seconds))
    m, s = divmod(seconds, 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress:
    """``Progress(total, desc)``; ``update(n, **values)`` then ``close()`` (or ``with``).

    Shows ``desc  37% |█████     | 370/1000 [00:12<00:20, 30.1 samples/s] loss=0.412``.
    ``enabled=False`` silences it.
    """

    def __init__(self, total: int, desc: str = "", unit: str = "it", *, file=None,
                 enabled: bool = True, width: int = 24, log_every: float = 10.0):
        self.total, self.desc, self.unit = max(int(total), 0), desc, unit
        self.file = file if file is not None else sys.stderr
        self.enabled, self.width, self.log_every = enabled, width, log_every
        self.tty = bool(getattr(self.file, "isatty", lambda: False)())
        self.n = 0
        self.values: dict = {}
        self.start = self._last = time.perf_counter()
        self._closed = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def update(self, n: int = 1, **values) -> None:
        self.n += n
        self.values.update(values)
        now = time.perf_counter()
        if self.enabled and (self.tty and now - self._last > 0.1
                             or not self.tty and now - self._last > self.log_every):
            self._last = now
            self._draw()

    def line(self) -> str:
        elapsed = time.perf_counter() - self.start
        rate = self.n / elapsed if elapsed > 0 else 0.0
        frac = self.n / self.total if self.total else 1.0
        fill = int(round(frac * self.width))
        bar = "\u2588" * fill + " " * (self.width - fill)
        eta = (self.total - self.n) / rate if rate > 0 else 0.0
        vals = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                        for k, v in self.values.items())
        return (f"{self.desc} {frac:4.0%} |{bar}| {self.n}/{self.total} "
                f"[{_fmt_time(elapsed)}<{_fmt_time(eta)}, {rate:.1f} {self.unit}/s] {vals}")

    def _draw(self, end: str = "") -> None:
        text = self.line()
        if self.tty:
            self.file.write("\r" + text + "\x1b[K" + end)
        else:
            self.file.write(text + "\n")
        self.file.flush()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.enabled:
            self._draw(end="\n")
