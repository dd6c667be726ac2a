"""Ollama's native API (`/api/*`) through the gateway: model calls routed like `/v1` ones but only
to Ollama endpoints (warm first), fleet-wide listings merged, fleet-changing calls guarded."""
