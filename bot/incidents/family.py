"""The incidents family's registration: commands, the timeline recorder, the cadence and
escalation jobs, the pages and alert intake, the demo, and the templates it renders."""

from __future__ import annotations

from commands import impact, incident

from ..family import Family, HomeSection
from ..services import Recorder, Services
from ..slack.conversations import slack_conversations
from .channels import CHANNEL_JOBS, attach
from .delivery import record_failed_delivery
from .demo import INCIDENT_TOUR, seed_incidents
from .home import open_incidents
from .jobs import INCIDENT_JOBS
from .pins import PINS
from .timeline import may_record, record_action
from .views import sample_contexts
from .web import router


def _setup(services: Services) -> None:
    attach(services, slack_conversations(services.settings))  # an incident's own channel (bot/incidents/channels.py)


family = Family(
    "incidents",
    commands=(incident.commands, impact.commands),
    recorders=(Recorder(record_action, may_record),),  # every action in an open incident's channel
    jobs=INCIDENT_JOBS + CHANNEL_JOBS,
    routes=(router,),  # GET /incidents, GET /incidents/{id}, POST /alerts
    seeders=(seed_incidents,),
    tour=tuple(INCIDENT_TOUR),
    templates=sample_contexts,
    delivery_failed=(record_failed_delivery,),  # a refused post on the incident timeline
    pins=PINS,  # 📌 on a message in an open incident's channel puts it on the timeline
    home=(HomeSection(open_incidents, reads="incident list", place=10),),  # the App Home: open incidents
    setup=_setup,
)
