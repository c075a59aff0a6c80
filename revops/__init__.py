"""revops: a ChatOps Slack bot for revenue and billing incident response."""

__version__ = "0.1.0"
