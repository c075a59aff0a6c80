"""The FastAPI app: Slack endpoint, flags, health, metrics (billing and incident routes join it)."""
