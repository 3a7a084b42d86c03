"""Settings that are facts of the deployment, never of a run.

Where the token goes (`plannr`: base_url, token, account_uuid), which folder and database are
written (`storage`, `duckdb`: data_dir, database) and where alerts go (`alert_webhook`: url) are
set by whoever deploys the code location: the environment, files the operator owns. A Pythonic
resource's fields are also its run config, though, so without this a `launchRun` (from the UI's
launchpad, a schedule, or any web page that can reach the webserver's /graphql) could send the
token to a host of its choosing, or write client data into another folder.

`FixedByDeployment` keeps those fields at the values the definitions gave them: run config that
names one with any other value fails the run as its resources start, before a request is sent
or a file is written, with one line naming the setting (never its value). Run config that
repeats the deployed value, or leaves the field out, is accepted as before.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import dagster as dg


class DeploymentSettingError(Exception):
    """Run config tried to change a setting the deployment fixes."""


def _deployed(value: Any) -> Any:
    """A field's value as the run will see it: an EnvVar is read now, as Dagster reads it."""
    return value.get_value() if isinstance(value, dg.EnvVar) else value


class FixedByDeployment:
    """Mixed into a ConfigurableResource: `DEPLOYMENT_FIELDS` (field -> the variable that sets it)
    cannot be changed by run config."""

    DEPLOYMENT_FIELDS: ClassVar[Mapping[str, str]] = {}

    def _with_updated_values(self, values: Mapping[str, Any] | None) -> Any:
        # Dagster builds every run's resource here, from the definitions' resource (`self`, built
        # from the deployment) and the run's resolved config (`values`): the one place to compare.
        values = dict(values or {})
        deployed = self._get_non_default_public_field_values()  # type: ignore[attr-defined]
        for name, variable in self.DEPLOYMENT_FIELDS.items():
            ours = _deployed(deployed[name]) if name in deployed else type(self).model_fields[name].default  # type: ignore[attr-defined]
            # Dagster fills a field the run config left out with None or the deployed value.
            theirs = values.get(name)
            if theirs is not None and theirs != ours:
                raise DeploymentSettingError(
                    f"run config may not set `{name}` of this resource: it is fixed by the deployment "
                    f"({variable}), not by a launch. Remove it from the run config."
                )
            values[name] = ours
        return super()._with_updated_values(values)  # type: ignore[misc]
