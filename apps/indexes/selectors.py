from __future__ import annotations

import json
import urllib.error
import urllib.request

from django.conf import settings


def search_health() -> dict:
    """Ask the search process for its health. Never raises: a down service is a result."""
    url = settings.SEARCH_URL.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=settings.SEARCH_HEALTH_TIMEOUT) as response:
            body = json.loads(response.read().decode())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return {"up": False, "url": settings.SEARCH_URL, "error": str(getattr(exc, "reason", exc))}
    return {"up": body.get("status") == "ok", "url": settings.SEARCH_URL, **body}
