from pathlib import Path

import pytest

from plannr_pipeline.api import ConfigurationError, PlannrSettings
from tests.cli import clean_env, run_cli


def test_sandbox_only_without_token_and_base_url():
    assert PlannrSettings.wants_sandbox({})
    assert not PlannrSettings.wants_sandbox({"PLANNR_BASE_URL": "http://127.0.0.1:9"})
    assert not PlannrSettings.wants_sandbox({"PLANNR_API_TOKEN": "t"})


def test_defaults_and_trailing_slash():
    settings = PlannrSettings.from_env({"PLANNR_API_TOKEN": "t", "PLANNR_BASE_URL": "https://x.test/"})
    assert settings.base_url == "https://x.test"
    assert settings.rate_limit_per_minute is None  # unset: follow what the server announces
    assert settings.starting_budget < 500


def test_base_url_without_token_names_the_variable():
    with pytest.raises(ConfigurationError, match="PLANNR_API_TOKEN"):
        PlannrSettings.from_env({"PLANNR_BASE_URL": "http://127.0.0.1:9"})


@pytest.mark.parametrize("value", ["fast", "0", "-3"])
def test_bad_budget_is_rejected_with_the_variable_name(value):
    with pytest.raises(ConfigurationError, match="PLANNR_RATE_LIMIT_PER_MINUTE"):
        PlannrSettings.from_env({"PLANNR_API_TOKEN": "secret", "PLANNR_RATE_LIMIT_PER_MINUTE": value})


def test_bad_base_url_is_rejected():
    with pytest.raises(ConfigurationError, match="http"):
        PlannrSettings.from_env({"PLANNR_API_TOKEN": "secret", "PLANNR_BASE_URL": "api.plannrcrm.com"})


@pytest.mark.parametrize(
    "env, says",
    [
        ({"PLANNR_API_TOKEN": "abc\n"}, "PLANNR_API_TOKEN has a line break"),
        (
            {"PLANNR_API_TOKEN": "t", "PLANNR_BASE_URL": "https://user:pw@api.example.test"},
            "PLANNR_BASE_URL carries credentials",
        ),
        (
            {"PLANNR_API_TOKEN": "t", "PLANNR_BASE_URL": "http://api.example.test"},
            "plain http:// to api.example.test",
        ),
    ],
)
def test_malformed_settings_are_one_clear_line(env, says):
    with pytest.raises(ConfigurationError, match=says) as raised:
        PlannrSettings.from_env(env)
    assert "\n" not in str(raised.value)


def test_plain_http_is_for_loopback_only(monkeypatch):
    for loopback in ("http://127.0.0.1:8765", "http://localhost:8765", "http://[::1]:8765"):
        assert PlannrSettings.from_env({"PLANNR_API_TOKEN": "t", "PLANNR_BASE_URL": loopback})
    monkeypatch.setenv("PLANNR_ALLOW_INSECURE_HTTP", "1")  # the old way round it: gone
    with pytest.raises(ConfigurationError, match="plain http:// to api.example.test"):
        PlannrSettings.from_env({"PLANNR_API_TOKEN": "t", "PLANNR_BASE_URL": "http://api.example.test"})


@pytest.mark.parametrize(
    "env_name, make",
    [
        ("PLANNR_DATA_DIR", lambda tmp: tmp / "a-file"),
        ("PLANNR_START_DATE", lambda tmp: "2999-01-01"),
        ("PLANNR_MAX_DELETE_SHARE", lambda tmp: "half"),
        ("PLANNR_MAX_DELETE_SHARE", lambda tmp: "1.5"),
    ],
)
def test_sync_refuses_a_bad_setting_before_any_run(tmp_path, env_name, make):
    (tmp_path / "a-file").write_text("")
    env = clean_env(
        {
            "DAGSTER_HOME": str(tmp_path / "home"),
            "PLANNR_DATA_DIR": str(tmp_path / "data"),
            env_name: str(make(tmp_path)),
        }
    )
    done = run_cli("sync", env=env, cwd=tmp_path)
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert env_name in line and "Traceback" not in done.stderr


def test_a_422_that_echoes_the_token_never_shows_it():
    import json

    from plannr_pipeline.api import PlannrClient, ValidationError

    client = PlannrClient(PlannrSettings(base_url="http://127.0.0.1:9", token="sekret-token-42"))
    body = json.dumps(
        {
            "message": "bad sekret-token-42",
            "errors": {"filter.sekret-token-42": ["sekret-token-42 is invalid"]},
        }
    )
    with pytest.raises(ValidationError) as raised:
        client._raise_for_client_error("/api/v1/account", 422, body.encode())
    assert "sekret-token-42" not in str(raised.value) and "sekret-token-42" not in repr(
        raised.value.field_errors
    )


def test_budget_dir_defaults_to_the_users_state_folder_and_may_be_set(tmp_path):
    from plannr_pipeline.api.config import budget_dir_from_env, default_budget_dir

    assert default_budget_dir({}) == Path.home() / ".local/state/plannr-pipeline/budget"
    state = tmp_path / "state"
    assert budget_dir_from_env({"XDG_STATE_HOME": str(state)}) == state / "plannr-pipeline/budget"
    assert all((folder.stat().st_mode & 0o777) == 0o700 for folder in (state, state / "plannr-pipeline"))
    assert budget_dir_from_env({"PLANNR_BUDGET_DIR": str(tmp_path / "b")}) == tmp_path / "b"
    assert (tmp_path / "b").is_dir()


@pytest.mark.parametrize(
    "value, says",
    [("relative/dir", "absolute path"), ("{file}", "is a file"), ("{file}/sub", "cannot be created")],
)
def test_unusable_budget_dir_is_one_line_naming_the_variable(tmp_path, value, says):
    from plannr_pipeline.api.config import budget_dir_from_env

    (tmp_path / "f").write_text("")
    with pytest.raises(ConfigurationError, match=says) as raised:
        budget_dir_from_env({"PLANNR_BUDGET_DIR": value.format(file=tmp_path / "f")})
    assert str(raised.value).startswith("PLANNR_BUDGET_DIR") and "\n" not in str(raised.value)


@pytest.mark.parametrize(
    "settings, variable",
    [
        (
            {"PLANNR_API_TOKEN": "sekret-t\u00f6ken", "PLANNR_BASE_URL": "http://127.0.0.1:9"},
            "PLANNR_API_TOKEN",
        ),
        (
            {"PLANNR_API_TOKEN": "sekret\x1btoken", "PLANNR_BASE_URL": "http://127.0.0.1:9"},
            "PLANNR_API_TOKEN",
        ),
        (
            {
                "PLANNR_API_TOKEN": "sekret-token",
                "PLANNR_BASE_URL": "http://127.0.0.1:9",
                "PLANNR_ACCOUNT_UUID": "0b5c0a7e-1f7e-4c4b-9d5e-0e0c6c5a9a1\x07",
            },
            "PLANNR_ACCOUNT_UUID",
        ),
        ({"PLANNR_API_TOKEN": "sekret-token", "PLANNR_ACCOUNT_UUID": "acme"}, "PLANNR_ACCOUNT_UUID"),
        ({"PLANNR_ACCOUNT_UUID": "not-a-uuid"}, "PLANNR_ACCOUNT_UUID"),  # even for the sandbox
    ],
)
def test_a_malformed_token_or_account_is_one_line_exit_2(tmp_path, settings, variable):
    """Case 8 of issue 22: these ended in a traceback (exit 1), or were not checked at all."""
    env = clean_env(
        {"DAGSTER_HOME": str(tmp_path / "home"), "PLANNR_DATA_DIR": str(tmp_path / "data"), **settings}
    )
    done = run_cli("sync", env=env, cwd=tmp_path, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"error: {variable}") and "Traceback" not in done.stderr
    assert "sekret" not in done.stdout + done.stderr  # neither the token nor a piece of it


def test_a_real_account_uuid_and_token_pass():
    settings = PlannrSettings.from_env(
        {"PLANNR_API_TOKEN": "12|aB-c_d.e~f", "PLANNR_ACCOUNT_UUID": "0b5c0a7e-1f7e-4c4b-9d5e-0e0c6c5a9a11"}
    )
    assert settings.account_uuid == "0b5c0a7e-1f7e-4c4b-9d5e-0e0c6c5a9a11"
