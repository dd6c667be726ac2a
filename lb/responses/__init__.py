"""Open Responses for fleetlb. The pure core (no I/O): ids (id makers), shape and conformance
(what objects, items and events must hold), translate with messages and output (Responses <->
Chat Completions), stream (chat chunks -> Responses events), normalize (native backends' events
and bodies -> the specification), items (input items as stored), compaction (opaque, signed
compaction items), framing (raw SSE in -> client bytes out, for lb.relay).
"""
