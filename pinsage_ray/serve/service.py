"""The JSON API of a served run, as a plain class (no Ray, no HTTP server).

:class:`RecommenderService` turns ``(method, path, body bytes)`` into ``(status, JSON
object)`` over one :class:`~pinsage_ray.recommender.Recommender`, so the request parsing and
the error-to-status mapping are tested without Serve. :mod:`pinsage_ray.serve.app` wraps it
in a Ray Serve deployment. Endpoints (bodies and answers are JSON objects)::

    GET  /health     {"status": "ok", "run_dir", "items", "index": {...}, "model": {...}}
    POST /related    {"item": ID | "items": [ID, ...], "k": 10, "ef": null}
                     -> {"item": ID, "similar": [[ID, score], ...]}  (or {"results": [...]})
    POST /recommend  {"items": [ID, ...], "k": 10, "timestamps": null, "half_life": null,
                      "exclude_seen": true} -> {"group_items": [...], "recommended": [...]}
    POST /items      {"ids": [ID, ...], "features": [[f, ...], ...], "groups": null,
                      "seed": 0, "save": false} -> {"added": [...], "items": N, "saved": ...}

Scores are cosine similarities, best first, exactly the in-process ``Recommender``'s answer.
Errors are ``{"error": message}``: the library's ``ValueError`` (bad ``k``, ``ef``, shapes,
an id already in the run) is 400 with its message, its ``KeyError`` (an item or group id not in
the run) 404, a malformed body 400 naming the field, more than :data:`MAX_ITEMS` ids in one
request 413 naming the field; anything else is a server fault (500).

The commonest request, the related items of one item, has a split path for batching
(:meth:`RecommenderService.plan_related`, then :meth:`RecommenderService.related_many`):
checked one by one, answered many at a time by one index query.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

logger = logging.getLogger(__name__)

Answer = tuple[int, dict[str, Any]]

#: Most item ids one request may carry (``/related`` items, ``/recommend`` items, ``/items``
#: ids): one request is one index query, and a replica answers one request at a time.
MAX_ITEMS = 1024


class HTTPError(Exception):
    """A request the service refuses, with its HTTP status and a one-line message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _reject_constant(name: str) -> float:
    raise HTTPError(400, f"request body holds {name}; send finite numbers")


class RelatedQuery(NamedTuple):
    """One checked single-item ``/related`` request (:meth:`RecommenderService.plan_related`)."""

    item: Any
    k: Any


def _json_object(body: bytes | dict[str, Any]) -> dict[str, Any]:
    if isinstance(body, dict):  # a DeploymentHandle call's arguments: already objects
        return body
    try:  # NaN and Infinity are not JSON; Python's parser accepts them unless told not to
        data = json.loads(body or b"{}", parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as err:
        raise HTTPError(400, f"request body is not JSON ({err})") from None
    if not isinstance(data, dict):
        raise HTTPError(400, f"request body is a JSON {type(data).__name__}; expected an object")
    return data


def _id_list(value: Any, name: str, integer_ids: bool) -> list[Any]:
    """A list of item ids of this run's kind (JSON numbers for integer ids, else strings)."""
    if not isinstance(value, list):
        raise HTTPError(400, f"{name}: expected a list of item ids, got {_show(value)}")
    if len(value) > MAX_ITEMS:
        raise HTTPError(413, f"{name}: {len(value)} ids; at most {MAX_ITEMS} per request "
                        "(split the request)")
    for i, v in enumerate(value):
        _check_id(v, f"{name}[{i}]", integer_ids)
    return value


def _check_id(value: Any, name: str, integer_ids: bool) -> None:
    kind = "integers (JSON numbers)" if integer_ids else "strings"
    ok = (isinstance(value, int) and not isinstance(value, bool)) if integer_ids \
        else isinstance(value, str)
    if not ok:
        raise HTTPError(400, f"{name}: {_show(value)}; this run's item ids are {kind}")


def _group_lists(value: Any, n: int) -> list[list[Any]] | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != n:
        raise HTTPError(400, f"groups: expected one list of group ids per new item ({n}), "
                        f"got {_show(value)}")
    for i, groups in enumerate(value):
        if not isinstance(groups, list) or not all(
                isinstance(g, (int, str)) and not isinstance(g, bool) for g in groups):
            raise HTTPError(400, f"groups[{i}]: expected a list of group ids (numbers or "
                            f"strings), got {_show(groups)}")
        if len({type(g) for g in groups}) > 1:
            raise HTTPError(400, f"groups[{i}]: mixes numbers and strings; group ids are one "
                            "kind")
    return value


def _number(value: Any, name: str, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or (positive and value <= 0):
        want = "a number > 0" if positive else "a number"
        raise HTTPError(400, f"{name}: expected {want}, got {_show(value)}")
    return float(value)


def _flag(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise HTTPError(400, f"{name}: expected true or false, got {_show(value)}")
    return value


def _show(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, float) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _unknown_fields(data: dict[str, Any], allowed: set[str]) -> None:
    extra = sorted(set(data) - allowed)
    if extra:
        raise HTTPError(400, f"unknown field(s) {extra}; expected some of {sorted(allowed)}")


class RecommenderService:
    """Answers the JSON API over one loaded :class:`~pinsage_ray.recommender.Recommender`.

    Not thread-safe: hnswlib must not be queried while items are added, and a per-request
    ``ef`` is set on the shared index for that query. The Serve deployment runs one request
    at a time through :meth:`handle` (see :mod:`pinsage_ray.serve.app`).

    Args:
        recommender: the loaded run.
        allow_add: whether ``POST /items`` may add items. A replica's additions live in that
            replica only, so the deployment allows them only with a single replica.
    """

    def __init__(self, recommender: Any, *, allow_add: bool = True) -> None:
        self.rec = recommender
        self.allow_add = allow_add
        self.integer_ids = bool(np.issubdtype(recommender.ids.dtype, np.integer))
        self.model = model_summary(recommender.run_dir)
        self._routes: dict[tuple[str, str], Callable[[Any], dict[str, Any]]] = {
            ("GET", "/health"): lambda body: self.health(),
            ("POST", "/related"): self._related,
            ("POST", "/recommend"): self._recommend,
            ("POST", "/items"): self._add_items,
        }

    @classmethod
    def load(cls, run_dir: str | os.PathLike, *, ef: int | None = None,
             allow_add: bool = True, partition_actors: bool = False) -> RecommenderService:
        """Load ``run_dir`` (its embeddings and index) once; see ``Recommender.load``."""
        from pinsage_ray.recommender import Recommender

        return cls(Recommender.load(run_dir, ef=ef, partition_actors=partition_actors),
                   allow_add=allow_add and not partition_actors)

    # ------------------------------------------------------------------ dispatch
    def handle(self, method: str, path: str, body: bytes | dict[str, Any] = b"") -> Answer:
        """``(HTTP status, JSON object)`` for one request; never raises.

        ``body``: the request's bytes, or its already-decoded object (a handle call).
        """
        route = self._routes.get((method.upper(), "/" + path.strip("/")))
        try:
            if route is None:
                paths = sorted({p for _, p in self._routes})
                if any(p == "/" + path.strip("/") for p in paths):
                    raise HTTPError(405, f"{method} {path}: method not allowed")
                raise HTTPError(404, f"no endpoint {method} {path}; endpoints: {paths}")
            return 200, route(body)
        except Exception as err:  # noqa: BLE001 - mapped to a status, never raised
            return error_answer(err, f"{method} {path}")

    def plan_related(self, body: bytes | dict[str, Any]) -> RelatedQuery | Answer | None:
        """A ``POST /related`` body of one ``item`` and no ``ef``, checked: ``(item, k)``.

        An error :data:`Answer` when the body is bad or the item unknown; None for any other
        body (several items, an ``ef``), which :meth:`handle` answers. ``(item, k)`` pairs
        are answered together by :meth:`related_many`.
        """
        try:
            data = _json_object(body)
            if "item" not in data or "items" in data or "ef" in data:
                return None
            _unknown_fields(data, {"item", "k"})
            item = data["item"]
            _check_id(item, "item", self.integer_ids)
            self.rec._rows([item], "items")  # an unknown item: KeyError -> 404, alone
            return RelatedQuery(item, data.get("k", 10))
        except Exception as err:  # noqa: BLE001 - mapped to a status, never raised
            return error_answer(err, "POST /related")

    def related_many(self, requests: list[RelatedQuery]) -> list[Answer]:
        """Answers to :meth:`plan_related`'s ``(item, k)`` pairs: one index query per ``k``.

        A bad ``k`` fails only the requests that carry it; each answer equals :meth:`handle`'s
        for the same body.
        """
        out: list[Answer | None] = [None] * len(requests)
        by_k: dict[Any, list[int]] = {}
        for i, (_, k) in enumerate(requests):
            by_k.setdefault(k if isinstance(k, int) and not isinstance(k, bool) else repr(k),
                            []).append(i)
        for positions in by_k.values():
            items = [requests[i][0] for i in positions]
            try:
                results = self.rec.similar_items_batch(items, requests[positions[0]][1])
            except Exception as err:  # noqa: BLE001 - the same answer for each of them
                answer = error_answer(err, "POST /related")
                for i in positions:
                    out[i] = answer
                continue
            for i, item, similar in zip(positions, items, results):
                out[i] = (200, {"item": item, "similar": similar})
        return out  # type: ignore[return-value]

    # ------------------------------------------------------------------ endpoints
    def health(self) -> dict[str, Any]:
        """Liveness and what is served: run, item count, index settings, model summary."""
        index = self.rec.index
        m = index.manifest
        return {"status": "ok", "run_dir": self.rec.run_dir, "items": len(self.rec.ids),
                "unsaved_added_items": int(getattr(self.rec, "_unsaved", 0)),
                "index": {"ef": index.ef, "space": index.space, "dim": index.dim,
                          "M": m.get("M"), "recall_at_k": m.get("recall_at_k"),
                          "k_for_recall": m.get("k_for_recall")},
                "model": self.model, "adding_items": self.allow_add}

    def _related(self, body: Any) -> dict[str, Any]:
        data = _json_object(body)
        _unknown_fields(data, {"item", "items", "k", "ef"})
        if ("item" in data) == ("items" in data):
            raise HTTPError(400, "give either \"item\": ID or \"items\": [ID, ...]")
        if "item" in data:
            _check_id(data["item"], "item", self.integer_ids)
        items = [data["item"]] if "item" in data else _id_list(data["items"], "items",
                                                               self.integer_ids)
        k = data.get("k", 10)
        ef = data.get("ef")
        if ef is None:
            results = self.rec.similar_items_batch(items, k)
        else:
            index = self.rec.index
            before = index.ef
            index.ef = ef  # validated by the index (ValueError -> 400); restored below
            try:
                results = self.rec.similar_items_batch(items, k)
            finally:
                index.ef = before
        if "item" in data:
            return {"item": data["item"], "similar": results[0]}
        return {"results": [{"item": i, "similar": r} for i, r in zip(items, results)]}

    def _recommend(self, body: Any) -> dict[str, Any]:
        data = _json_object(body)
        _unknown_fields(data, {"items", "k", "timestamps", "half_life", "exclude_seen"})
        items = _id_list(data.get("items"), "items", self.integer_ids)
        timestamps = data.get("timestamps")
        if timestamps is not None:
            if not isinstance(timestamps, list):
                raise HTTPError(400, f"timestamps: expected a list of numbers, got "
                                f"{_show(timestamps)}")
            timestamps = [_number(t, f"timestamps[{i}]") for i, t in enumerate(timestamps)]
        half_life = data.get("half_life")
        if half_life is not None:
            half_life = _number(half_life, "half_life", positive=True)
        out = self.rec.recommend_for_group(
            items, data.get("k", 10), timestamps=timestamps, half_life=half_life,
            exclude_seen=_flag(data.get("exclude_seen", True), "exclude_seen"))
        return {"group_items": items, "recommended": out}

    def _add_items(self, body: Any) -> dict[str, Any]:
        if not self.allow_add and hasattr(self.rec.index, "close"):  # PartitionActors
            raise HTTPError(409, "adding items is not possible while the partitioned index is "
                            "served by partition actors (read-only); add them offline with "
                            "Recommender.add_items + save_added_items, or `pinsage-ray "
                            "update`, and the replicas switch to the new version")
        if not self.allow_add:
            raise HTTPError(409, "adding items needs a single replica (each replica holds its "
                            "own index, so an item added to one would be missing from the "
                            "others); add them with num_replicas=1 and \"save\": true, or "
                            "offline with Recommender.add_items + save_added_items, then roll "
                            "the run out")
        data = _json_object(body)
        _unknown_fields(data, {"ids", "features", "groups", "seed", "save"})
        ids = _id_list(data.get("ids"), "ids", self.integer_ids)
        try:
            features = np.asarray(data.get("features"), dtype=np.float32)
        except (ValueError, TypeError):
            features = None
        if features is None or features.ndim != 2:
            raise HTTPError(400, f"features: expected a list of rows of numbers, one row per "
                            f"new item, got {_show(data.get('features'))}")
        groups = _group_lists(data.get("groups"), len(ids))
        seed = data.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise HTTPError(400, f"seed: expected an integer, got {_show(seed)}")
        save = _flag(data.get("save", False), "save")
        self.rec.add_items(ids, features, groups, seed=seed)
        out: dict[str, Any] = {"added": ids, "items": len(self.rec.ids), "saved": None}
        if save:
            out["saved"] = self.rec.save_added_items()
        return out


def error_answer(err: BaseException, what: str) -> Answer:
    """The status and ``{"error": ...}`` of an exception raised while answering ``what``."""
    if isinstance(err, HTTPError):
        return err.status, {"error": str(err)}
    if isinstance(err, KeyError):  # the library's unknown item or group id
        return 404, {"error": str(err.args[0]) if err.args else "not found"}
    if isinstance(err, (ValueError, TypeError, OverflowError)):  # the library's checks
        return 400, {"error": " ".join(str(err).split())}
    logger.error("%s failed", what, exc_info=err)  # a fault of ours: logged, answered 500
    return 500, {"error": f"internal error ({type(err).__name__}); see the replica log"}


def model_summary(run_dir: str) -> dict[str, Any] | None:
    """What ``/health`` says of the model: its config, epoch, loss and validation metrics."""
    from pinsage_ray.inference.model_io import run_path

    path = run_path(run_dir, "model", "model.json")
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError):  # a URI or an unreadable file: the index still serves
        return None
    if not isinstance(meta, dict):
        return None
    cfg = meta.get("model_config") or {}
    metrics = meta.get("metrics") or {}
    keep = ("embedding_dim", "hidden_dim", "num_layers", "conv", "feature_dim", "pooling",
            "use_id_embedding", "id_skip")
    return {"epoch": meta.get("epoch"),
            "config": {k: cfg[k] for k in keep if k in cfg},
            "loss": (meta.get("train_config") or {}).get("loss"),
            "metrics": {k: v for k, v in metrics.items() if k.startswith("val_")}}
