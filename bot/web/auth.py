"""Bearer-key checks in constant time."""

from __future__ import annotations

import hmac

from fastapi import HTTPException, Request
from pydantic import SecretStr


def bearer_ok(request: Request, expected: SecretStr | None) -> bool:
    if expected is None:
        return False
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return False
    return hmac.compare_digest(token.strip().encode(), expected.get_secret_value().encode())


def require_bearer(request: Request, expected: SecretStr | None) -> None:
    if not bearer_ok(request, expected):
        raise HTTPException(status_code=401, detail="missing or wrong bearer key",
                            headers={"WWW-Authenticate": "Bearer"})
