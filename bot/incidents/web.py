"""`GET /incidents`, `GET /incidents/{id}` (HTML, signed link or admin key) and `POST /alerts`."""

from __future__ import annotations

import json
import logging

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import ValidationError
from sqlalchemy import select

from ..grammar import as_id
from ..templating import render
from ..web.auth import bearer_ok, require_bearer
from . import charts, links, service
from .alerts import AlertBody, receive_alert, validation_problems
from .models import Incident
from .views import announce_alert, fmt_time, incident_view, timeline_view

router = APIRouter()
log = logging.getLogger("revops.incidents.web")

PAGE_HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "X-Robots-Tag": "noindex"}


def _authorize_page(request: Request, path: str, now) -> bool:
    """True when the admin key or a valid signature for this path came with the request.
    401 without any credentials; 403 for a bad or expired signature."""
    settings = request.app.state.runtime.settings
    if bearer_ok(request, settings.env.revops_admin_api_key):
        return False
    exp, sig = request.query_params.get("exp"), request.query_params.get("sig")
    if not exp and not sig:
        if request.headers.get("authorization"):
            raise HTTPException(status_code=401, detail="wrong bearer key", headers={"WWW-Authenticate": "Bearer"})
        raise HTTPException(status_code=401, detail="this page needs a signed link from the bot or the admin key",
                            headers={"WWW-Authenticate": "Bearer"})
    if not links.verify(settings, path, exp, sig, now):
        raise HTTPException(status_code=403, detail="this link is invalid or has expired; ask the bot for a new "
                                                    "one with /revops incident link")
    return True


async def display_names(services, ids) -> dict[str, str]:
    """Display names for `ids` from the names service (`services.extras["names"]`: `resolve(ids)`
    or `get(id)`), when there is one; an id without a name (or no service) shows as the id."""
    lookup = services.extras.get("names") if isinstance(getattr(services, "extras", None), dict) else None
    if lookup is None:
        return {}
    wanted = sorted(i for i in ids if i)
    try:
        if hasattr(lookup, "resolve"):
            found = await lookup.resolve(wanted)
        else:
            found = {i: lookup.get(i) for i in wanted}
    except Exception as exc:  # names are a nicety: the page shows ids rather than fail
        log.info("incident page: display names unavailable (%s)", type(exc).__name__)
        return {}
    return {str(k): str(v) for k, v in (found or {}).items() if v}


@router.get("/incidents", response_class=HTMLResponse)
async def incidents_page(request: Request):
    runtime = request.app.state.runtime
    services = runtime.services
    now = services.clock.now()
    _authorize_page(request, service.page_path(), now)
    async with services.db.transaction() as session:
        rows = (await session.execute(select(Incident).order_by(Incident.id.desc()).limit(100))).scalars().all()
        incidents = []
        for incident in rows:
            view = incident_view(incident, services.settings, now)
            query = links.signed_query(services.settings, service.page_path(incident.id), now)
            view["link"] = f"{service.page_path(incident.id)}?{query}" if query else service.page_path(incident.id)
            incidents.append(view)
        times = await charts.response_times(session, services.settings, now)
    html = render(services.settings, "incidents_page.html", incidents=incidents, now=fmt_time(now),
                  response_chart=charts.response_chart(times))
    return HTMLResponse(html, headers=PAGE_HEADERS)


@router.get("/incidents/{incident_id}", response_class=HTMLResponse)
async def incident_page(request: Request, incident_id: str):
    runtime = request.app.state.runtime
    services = runtime.services
    now = services.clock.now()
    _authorize_page(request, f"/incidents/{incident_id}", now)
    number = as_id(incident_id)
    if number is None:
        raise HTTPException(status_code=404, detail="no such incident")
    async with services.db.transaction() as session:
        incident = await session.get(Incident, number)
        if incident is None:
            raise HTTPException(status_code=404, detail="no such incident")
        entries = await service.timeline_of(session, incident.id)
        view = incident_view(incident, services.settings, now)
        chart = charts.timeline_chart(incident, entries, services.settings, now)
    people = {incident.commander, incident.comms, incident.scribe, incident.declared_by, incident.resolved_by, *(e.actor for e in entries)}
    names = await display_names(services, people - {service.BOT, None})  # after the transaction: network
    html = render(services.settings, "incident_page.html", incident=view, timeline=timeline_view(entries),
                  report=True, now=fmt_time(now), link=None, names=names, timeline_chart=chart,
                  **service.report_parts(entries))
    return HTMLResponse(html, headers=PAGE_HEADERS)


@router.post("/alerts")
async def alerts(request: Request):
    runtime = request.app.state.runtime
    services = runtime.services
    require_bearer(request, services.settings.env.revops_alerts_token)
    raw = await request.body()
    try:
        data = json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError):
        return JSONResponse({"error": "the body is not valid JSON"}, status_code=422)
    if not isinstance(data, dict):
        return JSONResponse({"error": "the body must be a JSON object"}, status_code=422)
    try:
        body = AlertBody.model_validate(data)
    except ValidationError as exc:
        return JSONResponse({"error": "invalid alert", "problems": validation_problems(exc)}, status_code=422)
    async with services.db.transaction() as session:
        received = await receive_alert(services, session, body)
        alert = received.alert
        await announce_alert(session, services.settings, alert, repeated=received.repeated)
        result = {"id": alert.id, "severity": alert.severity, "sigma": round(alert.sigma, 3),
                  "posted": alert.status != "recorded", "status": alert.status,
                  "repeated": received.repeated, "repeats": alert.repeats}
    if result["posted"]:
        for notify in services.on_posts:
            notify()
    return JSONResponse(result, status_code=202)
