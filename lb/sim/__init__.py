"""A simulated LLM backend (OpenAI-compatible, vLLM or Ollama flavoured) for newcomers
(`fleetlb sim`), the test suite's fake backends, and the bench's near-zero-CPU upstream."""

from lb.sim.app import BACKEND_KEY, BEHAVIOR_KEY, build_sim_app
from lb.sim.cli import configure_parser, run
from lb.sim.options import RecordedRequest, SimBehavior, SimKind, SimOptions
from lb.sim.text import answer_text, embedding

__all__ = [
    "BACKEND_KEY",
    "BEHAVIOR_KEY",
    "RecordedRequest",
    "SimBehavior",
    "SimKind",
    "SimOptions",
    "answer_text",
    "build_sim_app",
    "configure_parser",
    "embedding",
    "run",
]
