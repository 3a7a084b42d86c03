"""Sensor cursors are JSON. One that does not parse (edited by hand, written by an older
version) is reset to a fresh baseline with a warning, instead of failing every tick."""

from __future__ import annotations

import json
from typing import Any

import dagster as dg


def load_cursor(context: dg.SensorEvaluationContext, required: set[str]) -> dict[str, Any] | None:
    if not context.cursor:
        return None
    try:
        state = json.loads(context.cursor)
        if not isinstance(state, dict) or not required <= state.keys():
            raise ValueError("missing keys")
        return state
    except ValueError:
        context.log.warning(
            f"the cursor could not be read ({context.cursor[:60]!r}); starting again from a fresh baseline"
        )
        return None
