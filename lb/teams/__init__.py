"""Named client keys (teams): who is calling, which models they may use, and their limits.

    table.py    the key table: lookup of a presented key by its SHA-256, model access (pure)
    limits.py   per-key windows and in-flight counts behind the `LimitState` seam (pure)
    priority.py who an admission-queue slot goes to: interactive first, batch promoted by age
    stats.py    per-instance totals for metrics and /admin/keys (pure)
    gate.py     the aiohttp step: identify the key, admit each model call, headers, finish
    usage.py    asking streaming backends for usage, and hiding the extra chunk from the client
    admin.py    GET /admin/keys
"""
