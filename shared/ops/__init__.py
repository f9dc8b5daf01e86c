"""Operating the bridge: the operations (HTTP and CLI), health, telemetry, who the operator is."""
