"""fleetlb bench: latency and cost of the gateway, direct vs through it (issue 6)."""
