"""Progress of long work, with a time left: a line in the Dagster run log at a steady cadence,
and, when `sync` runs on a terminal, a live bar per step (tqdm).

The assets report here; the CLI installs the terminal bars. Nothing here knows HTTP or storage.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

# A run-log line at most this often (and at the end), so long work is visibly alive without
# drowning the log.
LOG_EVERY_SECONDS = 5.0
MIN_SECONDS_FOR_A_RATE = 2.0


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    return f"{minutes}m{seconds:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


@dataclass
class Progress:
    """One step's progress: `done` of `total` units, with the requests spent so far."""

    step: str
    unit: str
    log: Callable[[str], None]
    started: float = field(default_factory=lambda: time.monotonic())
    _last_logged: float | None = None  # the first line comes LOG_EVERY_SECONDS in (or at the end)

    def update(self, done: int, total: int | None, requests: int, budget_per_minute: int | None) -> None:
        now = time.monotonic()
        elapsed = max(now - self.started, 1e-6)
        left = (total - done) * elapsed / done if total and done else None
        finished = total is not None and done >= total
        parts = [f"{done:,}/{total:,} {self.unit}" if total else f"{done:,} {self.unit}"]
        if elapsed >= MIN_SECONDS_FOR_A_RATE:  # a rate over a fraction of a second says nothing
            budget = f" (budget {budget_per_minute:,}/min)" if budget_per_minute else ""
            parts.append(f"{requests / elapsed * 60:,.0f} requests/min{budget}")
        parts.append(
            f"about {_duration(left)} left"
            if left is not None and not finished
            else f"{_duration(elapsed)} so far"
        )
        message = ", ".join(parts)
        if SINK is not None:
            SINK(self.step, done, total, self.unit, message)
        if finished or now - (self._last_logged or self.started) >= LOG_EVERY_SECONDS:
            self._last_logged = now
            self.log(f"{self.step}: {message}")


FALLBACK_SIZE = os.terminal_size((80, 24))


def _terminal_has_a_size() -> bool:
    try:
        size = os.get_terminal_size(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return size.columns > 0 and size.lines > 0


class TerminalBars:
    """A tqdm bar per step, for `sync` on a terminal."""

    def __init__(self) -> None:
        from tqdm import tqdm

        self._tqdm = tqdm
        self._bars: dict[str, object] = {}

    def __call__(self, step: str, done: int, total: int | None, unit: str, message: str) -> None:
        bar = self._bars.get(step)
        if bar is None:
            sized = _terminal_has_a_size()
            bar = self._bars[step] = self._tqdm(
                total=total,
                desc=step,
                unit=f" {unit}",
                position=len(self._bars),
                leave=True,
                # Follow the terminal's size; one that reports none (a pty nobody sized, as some
                # CI runners and `docker exec` give) would get no bars at all from tqdm.
                dynamic_ncols=sized,
                ncols=None if sized else FALLBACK_SIZE.columns,
                nrows=None if sized else FALLBACK_SIZE.lines,
            )
        if total is not None and bar.total != total:
            bar.total = total
        bar.n = done
        bar.set_postfix_str(message.split(", ", 1)[1] if ", " in message else "", refresh=False)
        bar.refresh()

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()


# Where progress goes besides the run log: the CLI sets terminal bars here when on a terminal.
SINK: Callable[[str, int, int | None, str, str], None] | None = None
