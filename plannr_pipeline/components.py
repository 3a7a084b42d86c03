"""`PlannrFirm`: one firm of many in one deployment, one `defs.yaml` each under
`plannr_pipeline/defs/firms/<slug>/` (`dg scaffold defs plannr_pipeline.components.PlannrFirm
firms/<slug>`)."""

from __future__ import annotations

import dagster as dg

from plannr_pipeline.firms.build import firm_definitions
from plannr_pipeline.firms.settings import FirmSettings


class PlannrFirmScaffolder(dg.Scaffolder):
    """`dg scaffold defs plannr_pipeline.components.PlannrFirm firms/<slug>`: the folder's name
    is the slug, and the token's variable is named after it (its value never goes in a file)."""

    def scaffold(self, request: dg.ScaffoldRequest) -> None:
        slug = request.target_path.name
        dg.scaffold_component(request, {"slug": slug, "token_env": f"{slug.upper()}_PLANNR_API_TOKEN"})


@dg.scaffold_with(PlannrFirmScaffolder)
class PlannrFirm(dg.Component, FirmSettings, dg.Resolvable):
    """A Plannr firm: its assets keyed `<slug>/<name>` in group `<slug>`, its jobs and schedules
    `<slug>_...`, its own token (by variable NAME, read at run time), data folder and API pool.
    Its schema (FirmSettings) is what `dg check defs` validates each defs.yaml against."""

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        return firm_definitions(self)
