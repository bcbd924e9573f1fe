"""The JSON API as a FastAPI ingress: pydantic request and response models, an OpenAPI page.

``deployment(run_dir, api="fastapi")`` serves it (``/docs`` shows the OpenAPI page,
``/openapi.json`` the schema). The models check types, ranges and unknown fields; a body they
refuse is a 400 ``{"error": "field: reason"}`` like the hand-written path's, and the answers
come from the same :class:`~pinsage_ray.serve.replica.ReplicaCore` (single-item ``/related``
batched, the library's errors mapped to 4xx; the models' own messages for what they refuse).
It is not the default: against the hand-written routing at 32 clients, one replica, HAProxy,
it cost 16% and 37% of the requests/s in two measurements (medians of two alternating runs
each) and 0.2-0.4 more replica CPU ms per request; docs/serving.md has the table.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, Union

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

from ray import serve

from pinsage_ray.serve.replica import DEPLOYMENT_OPTIONS, RUN_HEADER, ReplicaCore
from pinsage_ray.serve.service import MAX_ITEMS, RelatedQuery

logger = logging.getLogger(__name__)

ItemId = Union[StrictInt, StrictStr]
Number = Union[StrictInt, StrictFloat]
Scored = tuple[ItemId, float]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RelatedRequest(_Body):
    """``POST /related``: ``item`` or ``items`` (one index query for all of them)."""

    item: ItemId | None = None
    items: Annotated[list[ItemId], Field(max_length=MAX_ITEMS)] | None = None
    k: Annotated[StrictInt, Field(ge=1)] = 10
    ef: Annotated[StrictInt, Field(ge=1)] | None = None


class Related(BaseModel):
    item: ItemId
    similar: list[Scored]


class RelatedMany(BaseModel):
    results: list[Related]


class RecommendRequest(_Body):
    """``POST /recommend``: a group's items (pooled into one query)."""

    items: Annotated[list[ItemId], Field(min_length=1, max_length=MAX_ITEMS)]
    k: Annotated[StrictInt, Field(ge=1)] = 10
    timestamps: list[Number] | None = None
    half_life: Annotated[Number, Field(gt=0)] | None = None
    exclude_seen: StrictBool = True


class Recommended(BaseModel):
    group_items: list[ItemId]
    recommended: list[Scored]


class AddItemsRequest(_Body):
    """``POST /items``: cold-start items from their features (and groups)."""

    ids: Annotated[list[ItemId], Field(max_length=MAX_ITEMS)]
    features: list[list[Number]]
    groups: list[list[ItemId]] | None = None
    seed: StrictInt = 0
    save: StrictBool = False


api = FastAPI(title="pinsage-ray", summary="Related items and recommendations of a PinSage run",
              docs_url="/docs", openapi_url="/openapi.json")


@api.exception_handler(RequestValidationError)
async def _refused(request: Request, err: RequestValidationError) -> JSONResponse:
    """A body the models refuse: 400 naming the field (``items.3: Input should be ...``)."""
    first = err.errors()[0] if err.errors() else {}
    if first.get("type") == "json_invalid":  # its location is a character position
        return JSONResponse({"error": "request body is not JSON"}, status_code=400)
    where = ".".join(str(p) for p in first.get("loc", ())[1:]) or "request body"
    return JSONResponse({"error": f"{where}: {first.get('msg', 'invalid')}"}, status_code=400)


def _answer(status: int, body: dict[str, Any], run_dir: str) -> Any:
    if status == 200:
        return body
    return JSONResponse(body, status_code=status, headers={RUN_HEADER: run_dir})


class TypedIngress(ReplicaCore):
    """:class:`ReplicaCore` routed by FastAPI (wrapped with ``serve.ingress(api)``)."""

    @api.get("/health")
    async def health(self, response: Response) -> dict[str, Any]:
        response.headers[RUN_HEADER] = self.run_dir
        status, body = self.service.handle("GET", "/health")
        body["num_replicas"] = self._num_replicas
        return body

    @api.post("/related", response_model=Union[Related, RelatedMany])
    async def related(self, req: RelatedRequest, response: Response) -> Any:
        response.headers[RUN_HEADER] = self.run_dir
        if req.item is not None and req.items is None and req.ef is None:
            plan = self.service.plan_related({"item": req.item, "k": req.k})
            status, body, headers = (await self._related_batch(plan)
                                     if isinstance(plan, RelatedQuery)
                                     else (*plan, self._headers))
            response.headers[RUN_HEADER] = headers[RUN_HEADER]  # the version that answered
        else:
            async with self._get_lock():
                response.headers[RUN_HEADER] = self.run_dir
                status, body = self.service.handle(
                    "POST", "/related", req.model_dump(exclude_none=True))
        return _answer(status, body, response.headers[RUN_HEADER])

    @api.post("/recommend", response_model=Recommended)
    async def recommend(self, req: RecommendRequest, response: Response) -> Any:
        response.headers[RUN_HEADER] = self.run_dir
        async with self._get_lock():
            status, body = self.service.handle("POST", "/recommend", req.model_dump())
        return _answer(status, body, self.run_dir)

    @api.post("/items")
    async def add_items(self, req: AddItemsRequest) -> Any:
        import asyncio

        async with self._get_lock():
            status, body = await asyncio.to_thread(self.service.handle, "POST", "/items",
                                                   req.model_dump())
        return _answer(status, body, self.run_dir)


# Applied at import, so that a replica importing this module gets the routes bound to the class.
TypedDeployment = serve.deployment(name="RecommenderDeployment", **DEPLOYMENT_OPTIONS)(
    serve.ingress(api)(TypedIngress))
