"""The generated firm kept on disk between sandbox starts (issue 26): read back, it is the firm
generation makes, and a different seed, size or day never reads another's file."""

from __future__ import annotations

import stat
from datetime import date

import httpx

from plannr_pipeline.sandbox.firm import FirmSize, generate_firm
from plannr_pipeline.sandbox.firm_cache import firm_from_cache

DAY = date(2026, 3, 29)  # a change of UK offset that day: the timestamps must come back as made


def test_a_cached_firm_is_the_generated_firm(tmp_path):
    size = FirmSize(clients=60, tasks_per_client=3)
    written = firm_from_cache(5, size, DAY, tmp_path / "cache")
    [file] = (tmp_path / "cache").iterdir()
    assert stat.S_IMODE(file.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "cache").stat().st_mode) == 0o700
    read = firm_from_cache(5, size, DAY, tmp_path / "cache")
    assert read == written == generate_firm(5, size, DAY)
    assert read.identity != written.identity  # two firms: their listings never share an order


def test_another_seed_size_or_day_is_another_file(tmp_path):
    firm_from_cache(5, FirmSize(clients=20), DAY, tmp_path)
    firm_from_cache(6, FirmSize(clients=20), DAY, tmp_path)
    firm_from_cache(5, FirmSize(clients=21), DAY, tmp_path)
    firm_from_cache(5, FirmSize(clients=20), date(2026, 3, 30), tmp_path)
    firm_from_cache(5, FirmSize(clients=20), DAY, tmp_path)  # read, not written again
    assert len(list(tmp_path.glob("firm-*.marshal"))) == 4


def test_the_file_is_what_a_start_reads(tmp_path):
    """What proves the cache is read at all: a file standing in for seed 6 serves seed 5's firm."""
    size = FirmSize(clients=20)
    firm_from_cache(5, size, DAY, tmp_path / "five")
    firm_from_cache(6, size, DAY, tmp_path / "six")
    [five], [six] = (tmp_path / "five").iterdir(), (tmp_path / "six").iterdir()
    six.write_bytes(five.read_bytes())
    assert firm_from_cache(6, size, DAY, tmp_path / "six").clients == generate_firm(5, size, DAY).clients


def test_a_sandbox_serves_its_cached_firm(make_sandbox, tmp_path):
    pages = []
    for _ in range(2):  # the first start writes the firm, the second reads it
        sandbox = make_sandbox(clients=30, reference=DAY, firm_cache_dir=tmp_path)
        headers = {"Authorization": f"Bearer {sandbox.options.token}"}
        answer = httpx.get(f"{sandbox.url}/api/v1/client", params={"per_page": 50}, headers=headers)
        pages.append(answer.json()["data"])
    assert pages[0] == pages[1] and len(pages[0]) == 30
    assert len(list(tmp_path.iterdir())) == 1
