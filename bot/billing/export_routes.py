"""`GET /exports/{id}.csv` (SPEC §3): a CSV made by `export …`, for whoever holds its signed link,
until the link (and the export) expires. No admin-key access: the link is the permission."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response

from ..incidents import links  # the one signer of the bot's links
from . import exports

router = APIRouter()

HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "X-Robots-Tag": "noindex",
           "X-Content-Type-Options": "nosniff"}


@router.get("/exports/{export_id}.csv")
async def export_csv(request: Request, export_id: str):
    services = request.app.state.runtime.services
    now = services.clock.now()
    exp, sig = request.query_params.get("exp"), request.query_params.get("sig")
    if not links.verify(services.settings, exports.path_of(export_id), exp, sig, now):
        raise HTTPException(status_code=403, detail="this export link is invalid or has expired; run "
                                                    "/revops export again for a new one")
    async with services.db.reading() as session:
        export = await exports.find(session, export_id, now)
    if export is None:
        raise HTTPException(status_code=404, detail="this export has expired and was removed; run "
                                                    "/revops export again")
    return Response(export.content.encode("utf-8"), media_type="text/csv; charset=utf-8",
                    headers={**HEADERS, "Content-Disposition": f'attachment; filename="{export.filename}"'})
