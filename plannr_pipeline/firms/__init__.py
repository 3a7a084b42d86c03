"""Many firms in one deployment: what makes one firm's definitions differ from another's."""

from plannr_pipeline.firms.firm import DEFAULT_FIRM, SLUG_PATTERN, Firm, rename_resources

__all__ = ["DEFAULT_FIRM", "SLUG_PATTERN", "Firm", "rename_resources"]
