"""Guardrails on the wire: the ``bedrock`` control plane (Create/Get/List/Update/Delete
Guardrail, CreateGuardrailVersion) and ``bedrock-runtime``'s ApplyGuardrail.

Status codes are botocore's: 202 for Create, Update, Delete and CreateGuardrailVersion.
Record reads and writes run off the event loop.
"""

from __future__ import annotations

import asyncio

from starlette.responses import Response

from outcrop.api.app import Call
from outcrop.api.responses import json_response
from outcrop.api.routing import Router
from outcrop.service.guardrails import GuardrailService


class GuardrailsApi:
    def __init__(self, service: GuardrailService) -> None:
        self.service = service

    def register(self, router: Router) -> None:
        one = "/guardrails/{guardrailIdentifier}"
        router.add("POST", "/guardrails", self.create_guardrail, "CreateGuardrail")
        router.add("GET", "/guardrails", self.list_guardrails, "ListGuardrails")
        router.add("GET", one, self.get_guardrail, "GetGuardrail")
        router.add("PUT", one, self.update_guardrail, "UpdateGuardrail")
        router.add("DELETE", one, self.delete_guardrail, "DeleteGuardrail")
        router.add("POST", one, self.create_guardrail_version, "CreateGuardrailVersion")
        router.add(
            "POST",
            "/guardrail/{guardrailIdentifier}/version/{guardrailVersion}/apply",
            self.apply_guardrail,
            "ApplyGuardrail",
        )

    async def create_guardrail(self, call: Call) -> Response:
        out = await asyncio.to_thread(self.service.create_guardrail, call.json())
        return json_response(out, call.request_id, status=202)

    async def get_guardrail(self, call: Call) -> Response:
        out = await asyncio.to_thread(
            self.service.get_guardrail,
            call.labels["guardrailIdentifier"],
            call.query("guardrailVersion"),
        )
        return json_response(out, call.request_id)

    async def list_guardrails(self, call: Call) -> Response:
        query = {k: call.query(k) for k in ("guardrailIdentifier", "maxResults", "nextToken")}
        out = await asyncio.to_thread(self.service.list_guardrails, query)
        return json_response(out, call.request_id)

    async def update_guardrail(self, call: Call) -> Response:
        out = await asyncio.to_thread(
            self.service.update_guardrail, call.labels["guardrailIdentifier"], call.json()
        )
        return json_response(out, call.request_id, status=202)

    async def delete_guardrail(self, call: Call) -> Response:
        await asyncio.to_thread(
            self.service.delete_guardrail,
            call.labels["guardrailIdentifier"],
            call.query("guardrailVersion"),
        )
        return json_response({}, call.request_id, status=202)

    async def create_guardrail_version(self, call: Call) -> Response:
        out = await asyncio.to_thread(
            self.service.create_guardrail_version, call.labels["guardrailIdentifier"], call.json()
        )
        return json_response(out, call.request_id, status=202)

    async def apply_guardrail(self, call: Call) -> Response:
        body = call.json()
        guardrail = call.labels["guardrailIdentifier"]
        version = call.labels["guardrailVersion"]
        out = await self.service.apply_guardrail(guardrail, version, body)
        return json_response(out, call.request_id)
