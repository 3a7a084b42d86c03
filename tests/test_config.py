import pytest

from plannr_pipeline.api import ConfigurationError, PlannrSettings


def test_sandbox_only_without_token_and_base_url():
    assert PlannrSettings.wants_sandbox({})
    assert not PlannrSettings.wants_sandbox({"PLANNR_BASE_URL": "http://127.0.0.1:9"})
    assert not PlannrSettings.wants_sandbox({"PLANNR_API_TOKEN": "t"})


def test_defaults_and_trailing_slash():
    settings = PlannrSettings.from_env({"PLANNR_API_TOKEN": "t", "PLANNR_BASE_URL": "http://x.test/"})
    assert settings.base_url == "http://x.test"
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
