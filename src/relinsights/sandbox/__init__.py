"""The sandbox tenant: a local HTTPS emulator of the Entra token endpoint and Microsoft Graph, filled with a
generated organisation whose mail and calendars change as its clock moves.

Public entry points: `SandboxServer` (server.py), `Org` and its mutations (model.py), `generate_org`
(generator.py), `FaultSpec` (faults.py).
"""

from .faults import FaultInjector, FaultSpec
from .generator import SIZES, OrgSize, generate_org
from .model import Org, SandboxClock, SandboxError
from .server import SandboxServer

__all__ = [
    "SIZES",
    "FaultInjector",
    "FaultSpec",
    "Org",
    "OrgSize",
    "SandboxClock",
    "SandboxError",
    "SandboxServer",
    "generate_org",
]
