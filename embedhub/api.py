"""The one REST API: every router under ``/api/v1/``, the schema at ``/api/openapi.json`` and
the Swagger UI at ``/api/docs`` (served from ninja's bundled static files: the app runs
offline).

Every operation needs ``Authorization: Bearer <token>`` (``TokenAuth``) and counts against the
token's rate limit (``TokenRateThrottle``, ``API_RATE_LIMIT``). Every error, ninja's own
included, is ``{"error": "...", "problems": [...]}``: an unexpected exception is a JSON 500 (the
traceback in the log, no server path in the message), Redis unreachable is a JSON 503, and
``ApiErrorMiddleware`` turns what never reaches ninja (unknown URL, wrong method, a URI too
long) into the same shape.
"""

from __future__ import annotations

import json

from django.conf import settings
from django.http import Http404, HttpRequest, JsonResponse
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, Throttled, ValidationError
from ninja.operation import Operation

from apps.accounts.api import (
    TOKEN_REQUIRED,
    BadRequest,
    TokenRateThrottle,
    error,
    exception_response,
    not_found,
    token_auth,
)
from apps.datasets.api import router as datasets_router
from apps.indexes.api import router as indexes_router
from apps.indexes.upgrades_api import router as upgrades_router
from apps.registry.api import router as registry_router
from apps.runs.api import router as runs_router


class EmbedHubAPI(NinjaAPI):
    def get_openapi_operation_id(self, operation: Operation) -> str:
        # "datasets_upload", not "apps_datasets_api_upload": the names generated clients use.
        module = operation.view_func.__module__.split(".")
        app = module[1] if module[0] == "apps" and len(module) > 2 else "_".join(module)
        return f"{app}_{operation.view_func.__name__}"


api = EmbedHubAPI(
    title="EmbedHub API",
    version="1",
    description="Datasets, models, training runs, evaluations and indexes of your team. "
    "Send `Authorization: Bearer <token>` (tokens: Team › API tokens).",
    urls_namespace="api",
    auth=token_auth,
    throttle=TokenRateThrottle(),
)
api.add_router("/v1/", datasets_router)
api.add_router("/v1/", registry_router)
api.add_router("/v1/", runs_router)
api.add_router("/v1/", indexes_router)
api.add_router("/v1/", upgrades_router)


@api.exception_handler(AuthenticationError)
def _unauthenticated(request: HttpRequest, exc: AuthenticationError) -> JsonResponse:
    response = error(TOKEN_REQUIRED, status=401)
    response["WWW-Authenticate"] = "Bearer"
    return response


@api.exception_handler(Throttled)
def _throttled(request: HttpRequest, exc: Throttled) -> JsonResponse:
    # ninja adds Retry-After (whole seconds) to this response.
    return error(f"too many requests: this token is limited to {settings.API_RATE_LIMIT}", 429)


@api.exception_handler(ValidationError)
def _invalid(request: HttpRequest, exc: ValidationError) -> JsonResponse:
    problems = [_problem(e) for e in exc.errors]
    return error(
        f"invalid request: {problems[0]}" if problems else "invalid request", 422, problems
    )


def _problem(item: dict) -> str:
    """``query.split: Input should be …``: where (the body's parameter name left out) and why."""
    loc = [str(part) for part in item.get("loc", ())]
    if len(loc) > 2 and loc[0] == "body":
        loc = [loc[0], *loc[2:]]
    if item.get("type") == "extra_forbidden":
        return f"{'.'.join(loc) or 'request'}: unknown field (not settable here)"
    return f"{'.'.join(loc) or 'request'}: {item.get('msg', 'invalid')}"


@api.exception_handler(HttpError)
def _http_error(request: HttpRequest, exc: HttpError) -> JsonResponse:
    cause = exc.__cause__
    if isinstance(cause, json.JSONDecodeError):  # ninja's "Cannot parse request body"
        return error(f"request body: line {cause.lineno}: {cause.msg}", exc.status_code)
    return error(str(exc), exc.status_code)


@api.exception_handler(Http404)
def _not_found(request: HttpRequest, exc: Http404) -> JsonResponse:
    return not_found()


@api.exception_handler(BadRequest)
def _bad_request(request: HttpRequest, exc: BadRequest) -> JsonResponse:
    return exc.response


@api.exception_handler(Exception)
def _unexpected(request: HttpRequest, exc: Exception) -> JsonResponse:
    # Also Redis (cache or queue) unreachable: a 503 rather than a 500.
    return exception_response(request, exc)
