"""Prometheus metrics: requests by command and outcome, acknowledgement latency."""

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

REGISTRY = CollectorRegistry(auto_describe=True)

REQUESTS = Counter(
    "revops_requests", "Commands and clicks handled, by command and outcome",
    ["command", "outcome"], registry=REGISTRY,
)
ACK_SECONDS = Histogram(
    "revops_ack_seconds", "Time from receiving a Slack request to acknowledging it",
    ["kind"], registry=REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0),
)
POSTS = Counter("revops_posts", "Messages delivered to Slack, by outcome", ["outcome"], registry=REGISTRY)
LINEAGE_CHECKS = Counter(
    "revops_lineage_checks", "Finance lineage invariant checks of applied Stripe events, by invariant and outcome",
    ["invariant", "outcome"], registry=REGISTRY,
)


def render() -> bytes:
    return generate_latest(REGISTRY)
