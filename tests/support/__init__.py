"""Real parts for tests: a PostgreSQL server, a recording Slack Web API, a live uvicorn server."""
