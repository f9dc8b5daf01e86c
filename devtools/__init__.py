"""Dev tooling: the F&O emulator, the local Functions host, Azurite helpers, demo and benchmark.

Never deployed (see .funcignore); imports `shared/` and `functions/`, never the other way round.
"""
