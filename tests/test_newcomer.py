"""Defects a newcomer tripped on: each test here failed before its fix."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli import clean_env, run_cli, sandbox_env

REPO = Path(__file__).resolve().parents[1]
PROJECT_CONFIG = (REPO / "dagster.yaml").read_text()
CUSTOM_CONFIG = (
    "# someone's own instance\nstorage:\n  postgres:\n    postgres_url: postgresql://localhost/dagster\n"
)


# -- 1. an existing instance's dagster.yaml is never overwritten; sync and the UI share one -------


def test_an_existing_instance_keeps_its_dagster_yaml(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(CUSTOM_CONFIG)
    result = run_cli("instance", cwd=tmp_path, env=clean_env({"DAGSTER_HOME": str(home)}))
    assert result.returncode == 0, result.stderr
    assert (home / "dagster.yaml").read_text() == CUSTOM_CONFIG
    assert result.stdout.strip() == str(home)
    assert f"Dagster instance: {home} (its own dagster.yaml, kept as it is)" in result.stderr


def test_a_new_instance_gets_the_projects_dagster_yaml(tmp_path):
    home = tmp_path / "fresh" / "home"  # not there yet
    result = run_cli("instance", cwd=tmp_path, env=clean_env({"DAGSTER_HOME": "fresh/home"}))
    assert result.returncode == 0, result.stderr
    assert (home / "dagster.yaml").read_text() == PROJECT_CONFIG
    assert result.stdout.strip() == str(home)  # a relative path is made absolute
    assert f"created DAGSTER_HOME {home}" in result.stderr


def test_without_dagster_home_the_instance_is_dot_dagster_home(tmp_path):
    result = run_cli("instance", cwd=tmp_path, env=clean_env({"DAGSTER_HOME": None}))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / ".dagster_home" / "dagster.yaml").read_text() == PROJECT_CONFIG
    assert result.stdout.strip() == str(tmp_path / ".dagster_home")


def test_a_dagster_home_that_is_a_file_is_one_clear_line(tmp_path):
    (tmp_path / "home").write_text("")
    result = run_cli("instance", cwd=tmp_path, env=clean_env({"DAGSTER_HOME": str(tmp_path / "home")}))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: DAGSTER_HOME={tmp_path / 'home'} is a file; point DAGSTER_HOME at a folder (or unset it for ./.dagster_home)."
    ]


@pytest.mark.parametrize("existing", [True, False])
def test_dev_script_starts_dagster_on_the_prepared_instance(tmp_path, existing):
    root = tmp_path / "repo"
    (root / "scripts").mkdir(parents=True)
    shutil.copy(REPO / "scripts" / "dev.sh", root / "scripts" / "dev.sh")
    (root / "scripts" / "setup.sh").write_text("#!/usr/bin/env bash\n")  # no venv, no pip
    bin_dir = root / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "dagster").write_text(
        '#!/usr/bin/env bash\necho "dagster stub: DAGSTER_HOME=$DAGSTER_HOME args=$*"\n'
    )
    (bin_dir / "plannr-pipeline").write_text(
        f'#!/usr/bin/env bash\nexec {sys.executable} -m plannr_pipeline.cli "$@"\n'
    )
    for stub in bin_dir.iterdir():
        stub.chmod(0o755)
    home = tmp_path / "home"
    if existing:
        home.mkdir()
        (home / "dagster.yaml").write_text(CUSTOM_CONFIG)
    result = subprocess.run(
        ["bash", str(root / "scripts" / "dev.sh"), "-p", "3001"],
        cwd=tmp_path,
        env=clean_env({"DAGSTER_HOME": str(home)}),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert (home / "dagster.yaml").read_text() == (CUSTOM_CONFIG if existing else PROJECT_CONFIG)
    assert f"Dagster instance: {home}" in result.stderr
    assert f"dagster stub: DAGSTER_HOME={home} args=dev -w workspace.yaml -p 3001" in result.stdout


# -- 2. the sandbox serves its own import error reports -----------------------------------------


def _all_imports(http, sandbox) -> list[dict]:
    records, url = [], f"{sandbox.url}/api/v1/import?per_page=500"
    while url:
        page = http.get(url).raise_for_status().json()
        records += page["data"]
        url = page["links"]["next"]
    return records


def test_sandbox_error_reports_are_served_by_the_sandbox(make_sandbox):
    import csv
    import io

    import httpx

    sandbox = make_sandbox()
    auth = {"Authorization": f"Bearer {sandbox.options.token}"}
    with httpx.Client(headers=auth, timeout=30) as http:
        imports = _all_imports(http, sandbox)
        with_report = [i for i in imports if i["error_report"] is not None]
        assert with_report, "the sandbox's history should hold finished imports with failed rows"
        for record in with_report:
            report = record["error_report"]
            assert report["download_url"] == f"{sandbox.url}/file/{report['uuid']}/download"
            answer = http.get(report["download_url"])
            assert answer.status_code == 200, answer.text
            assert answer.headers["content-type"].startswith("text/csv")
            assert int(report["size"]) == len(answer.content)
            rows = list(csv.DictReader(io.StringIO(answer.text)))
            assert len(rows) == record["failed_jobs"]  # one error per failed row in this sandbox
            assert len({row["row"] for row in rows}) == record["failed_jobs"]
            shown = [  # the API lists the first 25 failed rows; the report starts with the same ones
                {
                    "row": str(e["client"]["row"]),
                    "first_name": e["client"]["first_name"],
                    "last_name": e["client"]["last_name"],
                    "field": field,
                    "error": message,
                }
                for e in record["errors"]
                for field, messages in e["errors"].items()
                for message in messages
            ]
            assert rows[: len(shown)] == shown
        detail = http.get(f"{sandbox.url}/api/v1/import/{with_report[0]['uuid']}").json()
        assert detail["error_report"]["download_url"] == with_report[0]["error_report"]["download_url"]

        assert all(i["error_report"] is None for i in imports if i["failed_jobs"] == 0)
        url = with_report[0]["error_report"]["download_url"]
        assert httpx.get(url, timeout=30).status_code == 401  # same Bearer auth as every route
        unknown = http.get(f"{sandbox.url}/file/00000000-0000-4000-8000-000000000000/download")
        assert unknown.status_code == 404
        assert unknown.json() == {
            "message": "No query results for model [App\\Models\\File] 00000000-0000-4000-8000-000000000000"
        }


# -- 3. every citation points at something in this repository -----------------------------------

CITING_FILES = sorted(
    {REPO / "README.md", REPO / "pyproject.toml"}
    | set((REPO / "docs").glob("*.md"))
    | set((REPO / "scripts").glob("*.sh"))
    | set((REPO / "plannr_pipeline").rglob("*.py"))
    | set((REPO / "tests").rglob("*.py"))
)
API_NOTES = REPO / "docs/plannr-api.md"
# Not citations of files here: web addresses, and the API notes' "AD:" sources, which name pages of
# the public API docs site (the notes' "Source keys" say so), some of them ending in .md.
NOT_LOCAL = re.compile(r"https?://\S+|AD:[^)|\n]*")
PATH = re.compile(
    r"(?<![\w/.-])((?:\.\.?/)*[\w-]+(?:[./][\w-]+)*\.md(?!\()|(?:\.\.?/)*docs/[\w./-]*[\w/]|\.\./[\w./-]*[\w/])"
)
SECTION = re.compile(r"([\w./-]*plannr-api\.md)`?\)?,?\s+(?:section|§)\s*(\d+(?:\.\d+)?)", re.IGNORECASE)
OWN_SECTION = re.compile(r"§\s*(\d+(?:\.\d+)?)")  # inside the API notes: one of their own sections
HEADING = re.compile(r"\b(README(?:\.md)?|[\w./-]+\.md)`?,?\s+\"([^\"\n]+)\"")


def _headings(path: Path) -> set[str]:
    return {m.group(1).strip() for m in re.finditer(r"^#+\s+(.+?)\s*$", path.read_text(), re.MULTILINE)}


def _section_exists(number: str) -> bool:
    return any(re.match(rf"{re.escape(number)}(\.|\s)", heading) for heading in _headings(API_NOTES))


def _target(citing: Path, cited: str) -> Path | None:
    """The file a path citation names (from the repository root or the citing file's folder)."""
    for base in (REPO, citing.parent):
        path = (base / cited).resolve()
        if path.is_relative_to(REPO) and path.exists():
            return path
    return None


def _citation_problems(citing: Path, raw: str | None = None) -> list[str]:
    raw = citing.read_text() if raw is None else raw
    text = NOT_LOCAL.sub(lambda m: " " * len(m.group()), raw)
    where = lambda offset: f"{citing.relative_to(REPO)}:{raw.count(chr(10), 0, offset) + 1}"  # noqa: E731
    problems = []
    for m in PATH.finditer(text):
        if _target(citing, m.group(1)) is None:
            problems.append(f"{where(m.start())}: {m.group(1)!r} is not a file in the repository")
    for m in SECTION.finditer(text):
        if _target(citing, m.group(1)) != API_NOTES or not _section_exists(m.group(2)):
            problems.append(
                f"{where(m.start())}: {m.group()!r} does not name a section of docs/plannr-api.md"
            )
    if citing == API_NOTES:
        for m in OWN_SECTION.finditer(text):
            if not _section_exists(m.group(1)):
                problems.append(f"{where(m.start())}: {m.group()!r} is not a section of this file")
    for m in HEADING.finditer(text):
        name = m.group(1) if m.group(1).endswith(".md") else "README.md"
        target = _target(citing, name)
        if target is None or m.group(2) not in _headings(target):
            problems.append(f"{where(m.start())}: {m.group()!r}: no such heading")
    return problems


def test_citations_point_at_files_and_sections_in_the_repository():
    assert API_NOTES.exists() and (REPO / "docs/design.md").exists()
    problems = [problem for path in CITING_FILES for problem in _citation_problems(path)]
    assert not problems, "citations that lead nowhere:\n" + "\n".join(problems)


def test_the_citation_scan_catches_what_it_should():
    """The scanner itself: good citations pass, each kind of broken one is reported.

    The broken samples are split in two so that the scan of this very file does not see them.
    """
    citing = REPO / "tests" / "sample.py"
    good = 'docs/plannr-api.md section 4.7, docs/design.md, README.md, README, "Quick start", (see docs/asset-graph.png)'
    assert _citation_problems(citing, good) == []
    for bad in (
        ["..", "/shared/seeds"],
        ["DESIGN", ".md"],
        ["plannr-api", ".md section 7"],
        ["docs/plannr-api.md sec", "tion 12"],
        ["READ", 'ME, "Nope"'],
        ["do", "cs/missing.png"],
        ["docs/design.md", ', "Nothing"'],
    ):
        assert _citation_problems(citing, "".join(bad)), bad


# -- 3. a database held read-write elsewhere: the sync lands, exits 0 and says the views wait -------


def test_sync_says_when_the_views_could_not_be_refreshed(make_sandbox, tmp_path):
    sandbox = make_sandbox(clients=10)
    data_dir = tmp_path / "data"
    env = sandbox_env(sandbox, tmp_path)  # data in tmp_path/data, the instance in tmp_path/home
    first = run_cli("sync", "--select", "circles", cwd=tmp_path, env=env)
    assert first.returncode == 0, first.stderr[-2000:]
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); "
            "print('holding', flush=True); time.sleep(120)",
            str(data_dir / "plannr.duckdb"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "holding"
        second = run_cli("sync", "--select", "circles", cwd=tmp_path, env=env)
    finally:
        holder.kill()
        holder.wait()
    # The data landed and the views there read it: a held database is a note, not a failed sync.
    assert second.returncode == 0, second.stderr[-2000:]
    assert "the DuckDB views could not be updated yet" in second.stderr
    assert "run `plannr-pipeline views`" in second.stderr
    assert "sync finished: all assets landed." in second.stdout
    import dagster as dg

    with dg.DagsterInstance.from_config(str(tmp_path / "home")) as instance:
        [record] = instance.fetch_materializations(dg.AssetKey("circles"), limit=1).records
        metadata = record.asset_materialization.metadata
    assert metadata["views_refreshed"].value is False and "not refreshed" in metadata["views_problem"].value
    assert run_cli("views", cwd=tmp_path, env=env).returncode == 0  # once the other program is gone


# -- 7. the dg layout: `dg check defs` (what `dagster definitions validate` advises) works -------------


def test_dg_check_defs_passes_in_the_repository():
    dg_cli = Path(sys.executable).with_name("dg")
    assert dg_cli.exists(), "dagster-dg-cli is a dev dependency (pyproject.toml, requirements/dev.lock)"
    done = subprocess.run(
        [str(dg_cli), "check", "defs"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env=clean_env(),
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "All definitions loaded successfully." in done.stdout + done.stderr
