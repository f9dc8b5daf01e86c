"""A local Dynamics 365 F&O that speaks the documented contracts over HTTPS.

See devtools/fo_emulator/README.md for what it emulates and where it departs from F&O.
"""

from devtools.fo_emulator.server import EmulatorConfig, FoEmulator

__all__ = ["EmulatorConfig", "FoEmulator"]
