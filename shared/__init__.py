"""Code shared by every flow: settings, F&O auth and client, Table Storage state, telemetry.

Nothing here imports `functions/` or `devtools/`.
"""
