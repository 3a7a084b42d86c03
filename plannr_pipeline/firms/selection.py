"""`sync --select` across firms: `acme/clients` is one firm's asset, a bare `clients` is that
asset in every selected firm. Worked out before any firm starts, so a name that matches nothing
is one line (exit 2), not a child failing per firm."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


class SelectionError(ValueError):
    """A `--select` that names no asset of the firms being synced; one line, naming the fix."""


def per_firm_selection(
    select: str | None, firms: Sequence[str], asset_names: Iterable[str]
) -> dict[str, list[str] | None]:
    """Each firm to sync, with the bare asset names it syncs (None: all of them). With a
    selection, a firm none of whose assets is selected does not run at all."""
    if not select:
        return dict.fromkeys(firms)
    names = sorted(set(asset_names))
    chosen: dict[str, list[str]] = {firm: [] for firm in firms}
    unknown: list[str] = []
    for item in dict.fromkeys(part.strip() for part in select.split(",") if part.strip()):
        firm, _, name = item.rpartition("/")
        if name not in names or (firm and firm not in chosen):
            unknown.append(item)
            continue
        for slug in [firm] if firm else firms:
            if name not in chosen[slug]:
                chosen[slug].append(name)
    if unknown or not any(chosen.values()):
        raise SelectionError(
            f"--select: no asset {', '.join(unknown) or repr(select)} among the firms synced; "
            f"name one as FIRM/NAME or NAME (every firm), with FIRM one of {', '.join(firms)} "
            f"and NAME one of {', '.join(names)}"
        )
    return {slug: selected for slug, selected in chosen.items() if selected}
