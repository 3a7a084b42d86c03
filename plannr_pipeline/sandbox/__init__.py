"""The embedded sandbox: a deterministic imitation of the Plannr API served over real HTTP."""

from plannr_pipeline.sandbox.firm import Firm, FirmSize, generate_firm
from plannr_pipeline.sandbox.server import SandboxServer, embedded_sandbox

__all__ = ["Firm", "FirmSize", "SandboxServer", "embedded_sandbox", "generate_firm"]
