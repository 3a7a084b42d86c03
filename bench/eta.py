"""How close the progress bar's time left came: the ETA a step's progress lines showed against
when the step actually finished.

The sync prints, for a step like the goals fan-out, `goals: 1,000/10,000 clients, ..., about 1m05s
left` at every tenth of the work and every few seconds. With the time each line appeared (the
benchmark reads the sync's output as it comes), the ETA shown at a line predicts the step's end at
`when + left`; its error is how far that end is from the real one, as a share of the step's time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_LINE = re.compile(
    r"(?P<step>\w+): (?P<done>[\d,]+)/(?P<total>[\d,]+) (?P<unit>\w+),.*?(?:about (?P<left>\S+) left|so far)"
)
_DURATION = re.compile(r"^(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m)?(?:(?P<s>\d+)s)?$")


def seconds_of(duration: str) -> float:
    """`1h02m`, `1m05s`, `7s` (as progress.py prints them) in seconds."""
    found = _DURATION.match(duration)
    if not found or not any(found.groupdict().values()):
        raise ValueError(duration)
    return sum(int(found[part] or 0) * factor for part, factor in (("h", 3600), ("m", 60), ("s", 1)))


@dataclass(frozen=True)
class EtaPoint:
    share: float  # of the work done when the line was printed
    at: float  # seconds into the step
    left: float  # the time left it showed
    error: float  # (predicted end - actual end) / the step's actual time


def eta_points(
    lines_at: list[tuple[float, str]], step: str, started_marker: str
) -> tuple[float, list[EtaPoint]]:
    """(the step's actual seconds, every ETA its progress lines showed). The step starts at the
    first line containing `started_marker` and ends at its line saying all was done."""
    start = next((t for t, line in lines_at if started_marker in line), None)
    shown, end = [], None
    for t, line in lines_at:
        found = _LINE.search(line)
        if start is None or found is None or found["step"] != step:
            continue
        done, total = int(found["done"].replace(",", "")), int(found["total"].replace(",", ""))
        if done >= total:
            end = t
            break
        if found["left"]:
            shown.append((done / total, t - start, seconds_of(found["left"])))
    if start is None or end is None:
        return 0.0, []
    actual = end - start
    return actual, [EtaPoint(share, at, left, (at + left - actual) / actual) for share, at, left in shown]


def nearest(points: list[EtaPoint], share: float) -> EtaPoint | None:
    return min(points, key=lambda p: abs(p.share - share), default=None)
