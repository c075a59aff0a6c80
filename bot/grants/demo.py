"""The four-eyes grant flow in the console demo (uses the billing demo's accounts)."""

GRANTS_TOUR: list[tuple[str, str]] = [
    ("U0RESPONDER", "/revops grant"),  # no arguments: the form's fields (a modal in Slack, prompts here)
    ("U0RESPONDER", "/revops grant ada@example.com 25 goodwill for the checkout incident"),
    ("U0RESPONDER", "click Approve"),  # a responder cannot approve
    ("U0APPROVER", "click Approve"),  # a second person approves: the credits land once
    ("U0APPROVER2", "click Approve"),  # a second click changes nothing and says who decided
    ("U0RESPONDER", "/revops credits adjust acct_ada -500 wrong pack"),  # never below zero
    ("U0VIEWER", "/revops credits acct_ada"),
]
