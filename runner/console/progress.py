"""A small console progress bar for generation and scoring (items/s and ETA).

Why not tqdm: the bar must never reach the JSON log, and a run that is piped or runs under a
scheduler must not fill its stderr with carriage-return frames. So the bar draws only when
its stream is a terminal (or `RUNNER_PROGRESS=1` forces it, for tests and for people who
want it in a pager), redraws at most a few times a second, and writes nothing else. The
structlog JSON log is a separate sink: nothing here goes through logging.
"""

from __future__ import annotations

import os
import sys
import time
from types import TracebackType
from typing import TextIO

__all__ = ["Progress", "progress_enabled"]

_BAR_WIDTH = 24
_MIN_REDRAW_S = 0.2  # at most five frames a second: cheap, and calm to read


def progress_enabled(stream: TextIO) -> bool:
    """True when a bar should be drawn on `stream`: a tty, or RUNNER_PROGRESS=1 forces it."""
    forced = os.environ.get("RUNNER_PROGRESS", "")
    if forced == "0":
        return False
    if forced == "1":
        return True
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except (ValueError, OSError):  # a closed stream
        return False


def _clock(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


class Progress:
    """`Progress(total, desc)`: call `.update(n)` as items finish and `.close()` at the end.

    Silent (a no-op) when the stream is not a terminal, so phases can always create one.
    The rate counts only items done in this process, so a resumed phase shows an honest
    items/s and ETA rather than the speed of skipped batches.
    """

    def __init__(self, total: int, desc: str, stream: TextIO | None = None) -> None:
        self.total = max(0, int(total))
        self.desc = desc
        self.stream: TextIO = stream if stream is not None else sys.stderr
        self.enabled = progress_enabled(self.stream)
        self.done = 0
        self._start = time.monotonic()
        self._last_draw = 0.0
        self._closed = False
        self._width = 0

    def update(self, n: int = 1) -> None:
        """Count `n` more items done and redraw if enough time has passed."""
        self.done += int(n)
        now = time.monotonic()
        if self.enabled and (now - self._last_draw >= _MIN_REDRAW_S or self.done >= self.total):
            self._draw(now)

    def line(self, now: float | None = None) -> str:
        """The text of the bar as it would be drawn now (also used by tests)."""
        now = time.monotonic() if now is None else now
        elapsed = max(now - self._start, 1e-9)
        rate = self.done / elapsed
        frac = min(1.0, self.done / self.total) if self.total else 1.0
        filled = round(frac * _BAR_WIDTH)
        bar = "#" * filled + "-" * (_BAR_WIDTH - filled)
        left = self.total - self.done
        eta = _clock(left / rate) if rate > 0 and left > 0 else "--:--"
        if left <= 0:
            eta = _clock(elapsed)
        return f"{self.desc} [{bar}] {self.done}/{self.total} {rate:.1f} it/s ETA {eta}"

    def _draw(self, now: float) -> None:
        text = self.line(now)
        pad = " " * max(0, self._width - len(text))  # wipe the tail of a longer earlier frame
        self._width = len(text)
        try:
            self.stream.write("\r" + text + pad)
            self.stream.flush()
        except (ValueError, OSError):  # the terminal went away: stop drawing, never fail
            self.enabled = False
        self._last_draw = now

    def close(self) -> None:
        """Draw the final frame and end the line; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self.enabled:
            self._draw(time.monotonic())
            try:
                self.stream.write("\n")
                self.stream.flush()
            except (ValueError, OSError):
                pass

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
