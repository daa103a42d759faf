"""bedrock-agent and bedrock-agent-runtime routes match botocore's models exactly, and
errors carry each service's HTTP status for their shape."""

from __future__ import annotations

import botocore.session
import pytest

from outcrop.api.agent import AGENT_STATUS, AgentApi
from outcrop.api.agent_runtime import RUNTIME_STATUS, AgentRuntimeApi
from outcrop.api.routing import Router
from outcrop.errors import ConflictError, with_service_status


def _routes(api) -> dict[str, tuple[str, tuple[str, ...]]]:  # noqa: ANN001
    router = Router()
    api.register(router)
    return {r.operation: (r.method, r.parts) for r in router._routes}


@pytest.mark.parametrize(
    ("service", "api"),
    [
        ("bedrock-agent", AgentApi(None, None, None)),
        ("bedrock-agent-runtime", AgentRuntimeApi(None)),
    ],  # type: ignore[arg-type]
)
def test_routes_match_botocore(service, api):
    model = botocore.session.get_session().get_service_model(service)
    routes = _routes(api)
    assert routes
    for operation, (method, parts) in routes.items():
        http = model.operation_model(operation).http
        assert method == http["method"], operation
        uri = tuple(p for p in http["requestUri"].split("?")[0].strip("/").split("/") if p)
        assert parts == uri, operation


@pytest.mark.parametrize(
    ("service", "table"),
    [("bedrock-agent", AGENT_STATUS), ("bedrock-agent-runtime", RUNTIME_STATUS)],
)
def test_status_tables_match_botocore(service, table):
    model = botocore.session.get_session().get_service_model(service)
    for shape, status in table.items():
        assert model.shape_for(shape).metadata["error"]["httpStatusCode"] == status


def test_conflict_is_409_on_bedrock_agent_only():
    assert ConflictError("x").status == 400
    assert with_service_status(ConflictError("x"), AGENT_STATUS).status == 409
