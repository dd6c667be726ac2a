"""Real-backend tests: fleetlb in front of llama.cpp `llama-server` and vLLM (CPU)."""
