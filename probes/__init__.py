"""Background health probing of the fleet: per-kind checks, the periodic prober, and its CLI."""

from probes.checks import CheckResult, check, classify_responses_probe, detect_responses
from probes.prober import EventLog, Prober

__all__ = [
    "CheckResult",
    "EventLog",
    "Prober",
    "check",
    "classify_responses_probe",
    "detect_responses",
]
