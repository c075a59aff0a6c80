"""The Slack adapter: bolt AsyncApp, Block Kit rendering, the Web API client."""
