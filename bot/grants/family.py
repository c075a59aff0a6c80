"""The grants family's registration: the four-eyes grant commands and the expiry sweep."""

from __future__ import annotations

from commands import grant

from ..family import Family, HomeSection
from .delivery import approval_not_posted
from .demo import GRANTS_TOUR
from .home import pending_requests
from .jobs import GRANT_JOBS

family = Family(
    "grants",
    commands=(grant.commands,),
    jobs=GRANT_JOBS,  # pending requests past approval_ttl expire
    tour=tuple(GRANTS_TOUR),
    delivery_failed=(approval_not_posted,),  # the requester hears the request is still decidable
    home=(HomeSection(pending_requests, reads="grant pending", place=20),),  # the App Home: requests waiting
)
