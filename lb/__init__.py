"""fleetlb: a load balancer and gateway for fleets of Ollama, vLLM and OpenAI-compatible servers."""

__version__ = "0.1.0"
