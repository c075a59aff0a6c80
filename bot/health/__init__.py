"""Health checks and the go-live preflight: concurrent bounded probes (probes),
their history and p95 (history), the bot's own checks (selfcheck), the
checklist (preflight) and the worker's scheduled round (job)."""
