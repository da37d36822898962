"""What a long step is doing: a live line on a terminal, one line per step in logs.

    with progress.step("build kubernetes v1.35.4") as s:
        s.phase("go mod tidy")
        ...

On a terminal (stderr is a TTY) the step shows one line, rewritten in place about once a
second: what runs, when it started and how long it has run; the line is cleared when the step
ends and the outcome is printed. Elsewhere (CI logs, pipes) a step prints nothing while it runs
and one line when it ends: label, outcome, start time, elapsed. `MLPLATFORM_PROGRESS=live`,
`plain` or `off` overrides the detection.

Code that does the work reports its phase with `progress.phase(text)` and need not know whether
a step is open: outside one it does nothing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import threading
import time
from typing import TextIO

MODES = ("live", "plain", "off")
# How often the live line is redrawn; the elapsed time it shows is in whole seconds.
REFRESH_SECONDS = 1.0

# One lock for the open steps and every write to the live line: phases are set from the
# working thread while the refresher draws from its own.
_lock = threading.RLock()
_open: list[Step] = []
_live: _LiveLine | None = None


def mode(stream: TextIO | None = None) -> str:
    """`live`, `plain` or `off`: MLPLATFORM_PROGRESS, else `live` where the stream is a terminal."""
    setting = os.environ.get("MLPLATFORM_PROGRESS", "").strip().lower()
    if setting in MODES:
        return setting
    stream = sys.stderr if stream is None else stream
    try:
        return "live" if stream.isatty() else "plain"
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return "plain"


def _clock(wall: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(wall))


class _LiveLine:
    """The one line the open live steps share, redrawn by a daemon thread (it never keeps the
    process alive) until the last of them ends."""

    def __init__(self, stream: TextIO, interval: float) -> None:
        self.stream = stream
        self.interval = interval
        self.shown = 0  # characters on the line now
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._refresh, name="mlplatform-progress", daemon=True)

    def _refresh(self) -> None:
        while not self.stopped.wait(self.interval):
            with _lock:
                # Checked under the lock: the step that stops the line sets it there, after
                # clearing, so no draw can come after the clear.
                if self.stopped.is_set():
                    return
                self.draw()

    def _width(self) -> int:
        try:
            columns = os.get_terminal_size(self.stream.fileno()).columns
        except (AttributeError, ValueError, OSError):
            columns = 0
        if columns <= 0:  # no size known (a pseudo-terminal may report 0): COLUMNS, else 80
            columns = shutil.get_terminal_size().columns
        # One column spare: a line that fills the terminal wraps, and `\r` returns to the wrong row.
        return max(columns - 1, 20)

    def _write(self, text: str) -> None:
        if self.stopped.is_set():
            return
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # a closed or broken terminal does not fail the step
            self.stopped.set()

    def draw(self) -> None:
        steps = [s for s in _open if s.mode == "live"]
        if not steps:
            return
        # Steps of one thread nest ("a > b: phase"); steps of other threads run beside ("|").
        threads: dict[int, list[Step]] = {}
        for each in steps:
            threads.setdefault(each._thread, []).append(each)
        parts = []
        for nested in threads.values():
            phase = nested[-1].current_phase
            parts.append(" > ".join(s.label for s in nested) + (f": {phase}" if phase else ""))
        what = " | ".join(parts)
        inner = steps[-1]
        when = f"  (started {_clock(inner.started_wall)}, {inner.elapsed():.0f}s)"
        room = self._width() - len(when)
        if len(what) > room:
            # Cut the middle: the label starts the line and a phase's end names the binary.
            head = max(room - 3, 0) // 2
            tail = max(room - 3 - head, 0)
            what = what[:head] + "..." + (what[-tail:] if tail else "")
        line = what + when
        # Padding covers the rest of a longer line drawn before.
        self._write("\r" + line.ljust(self.shown))
        self.shown = len(line)

    def clear(self) -> None:
        if self.shown:
            self._write("\r" + " " * self.shown + "\r")
            self.shown = 0


class Step:
    """One long step, as a context manager. `report=False` where the caller prints the outcome
    itself; `live=False` where the step's own output goes to the terminal; `stream` (default
    stderr) and `interval` (default REFRESH_SECONDS) for tests."""

    def __init__(
        self,
        label: str,
        *,
        report: bool = True,
        live: bool = True,
        stream: TextIO | None = None,
        interval: float | None = None,
    ) -> None:
        self.label = label
        # report=False: the caller prints the outcome itself (the `mlplatform tools` table).
        self.report = report
        self.stream = sys.stderr if stream is None else stream
        self.mode = mode(self.stream)
        if self.mode == "live" and not live:
            # The step's own output goes to the terminal (a child process printing as it
            # goes): a live line would tear it, so only the closing line is printed.
            self.mode = "plain"
        self.interval = REFRESH_SECONDS if interval is None else interval
        self.current_phase = ""
        self.outcome = "done"
        self.started_wall = 0.0
        self._started = 0.0
        self._ended = 0.0
        self._thread = 0  # the thread that opened it: progress.phase() finds its own steps

    def elapsed(self) -> float:
        """Seconds since the step started; once it has ended, how long it took."""
        return (self._ended or time.monotonic()) - self._started

    def phase(self, text: str) -> None:
        """What the step is doing now; shown on the live line at once."""
        with _lock:
            self.current_phase = text
            if _live is not None and self.mode == "live":
                _live.draw()

    def fail(self, reason: str = "") -> None:
        """Mark the step failed without raising (a child process's exit status, say)."""
        self.outcome = f"failed ({reason})" if reason else "failed"

    def summary(self) -> str:
        return f"{self.label}: {self.outcome} in {self.elapsed():.1f}s (started {_clock(self.started_wall)})"

    def __enter__(self) -> Step:
        global _live
        self.started_wall = time.time()
        self._started = time.monotonic()
        self._thread = threading.get_ident()
        with _lock:
            _open.append(self)
            if self.mode == "live":
                if _live is None:
                    _live = _LiveLine(self.stream, self.interval)
                    _live.thread.start()
                _live.draw()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        global _live
        self._ended = time.monotonic()
        if exc_type is not None:
            self.outcome = "failed"
        line = self.summary() if self.report and self.mode != "off" else None
        with _lock:
            _open.remove(self)
            live = _live
            if live is not None:
                live.clear()
            if line:
                self._print(line)
            if live is not None:
                if any(s.mode == "live" for s in _open):
                    live.draw()
                else:
                    live.stopped.set()
                    _live = None
        return False  # an exception goes on to the caller

    def _print(self, line: str) -> None:
        with contextlib.suppress(OSError, ValueError):  # as _LiveLine._write: the step goes on
            print(line, file=self.stream, flush=True)


# `with progress.step(label) as s:` reads as what it is at the call sites.
step = Step


def phase(text: str) -> None:
    """Set the phase of the innermost step this thread has open; nothing outside a step."""
    with _lock:
        mine = [s for s in _open if s._thread == threading.get_ident()]
        if mine:
            mine[-1].phase(text)


def echo(text: str, file: TextIO | None = None) -> None:
    """Print a line while a step may be live: the live line is cleared first and drawn again
    after, so the two do not run into each other on the terminal."""
    with _lock:
        if _live is not None:
            _live.clear()
        print(text, file=sys.stdout if file is None else file, flush=True)
        if _live is not None:
            _live.draw()
