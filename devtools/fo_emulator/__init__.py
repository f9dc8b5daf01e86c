"""A local Dynamics 365 F&O that speaks the documented contracts over HTTPS.

What it emulates: the README's "F&O emulator" section; the contracts it holds the bridge to:
docs/reference/fo-contracts.md.
"""

from devtools.fo_emulator.server import EmulatorConfig, FoEmulator

__all__ = ["EmulatorConfig", "FoEmulator"]
