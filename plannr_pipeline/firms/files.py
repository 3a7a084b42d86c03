"""The firm files (`defs/firms/<slug>/defs.yaml`) read outside Dagster's loader, for the command
line (`sync --firm`), which must name a mistake in one line before anything runs, and for the
checks that span firms (two firms must never share a slug or a data folder)."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from plannr_pipeline.firms.settings import FirmSettings

FIRM_TYPE = "plannr_pipeline.components.PlannrFirm"
FIRMS_DIR = Path(__file__).resolve().parent.parent / "defs" / "firms"


def firm_files_exist() -> bool:
    return any(FIRMS_DIR.glob("*/defs.yaml"))


def firm_named(slug: str) -> FirmSettings:
    for firm in read_firm_files(FIRMS_DIR):
        if firm.slug == slug:
            return firm
    raise FirmFileError(f"{FIRMS_DIR}: no firm file has slug {slug!r}")


class FirmFileError(ValueError):
    """A firm file that cannot be used: the message is one line naming the file and the field."""


def read_firm_file(path: Path) -> FirmSettings:
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise FirmFileError(f"{path}: cannot be read as YAML ({type(error).__name__})") from None
    if not isinstance(document, dict) or document.get("type") != FIRM_TYPE:
        raise FirmFileError(f"{path}: type: must be {FIRM_TYPE}")
    attributes = document.get("attributes") or {}
    try:
        return FirmSettings(**attributes)
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "attributes"
        # pydantic's message, never the input value (a token pasted into the wrong field stays out)
        raise FirmFileError(f"{path}: {field}: {first['msg']}") from None


def read_firm_files(folder: Path) -> list[FirmSettings]:
    """Every firm under `folder`, checked against each other: a slug or a data folder used
    twice would mix two firms' data."""
    firms: list[FirmSettings] = []
    seen_folders: dict[Path, str] = {}
    for path in sorted(folder.glob("*/defs.yaml")):
        firm = read_firm_file(path)
        if any(f.slug == firm.slug for f in firms):
            raise FirmFileError(f"{path}: slug: {firm.slug!r} is used by another firm file")
        data = Path(firm.folder()).absolute()
        for other, slug in seen_folders.items():
            if data == other or other in data.parents or data in other.parents:
                raise FirmFileError(f"{path}: data_dir: {data} overlaps firm {slug}'s data folder {other}")
        seen_folders[data] = firm.slug
        firms.append(firm)
    return firms
