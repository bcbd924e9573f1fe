"""Online serving of a trained run on Ray Serve (``pinsage-ray serve RUN_DIR``).

Public API: :func:`deployment` (the Serve application of a run), :func:`start` (Ray + Serve
on a host and port, then the application) and :class:`RecommenderService` (the JSON API as a
plain class, without Ray). ``deployment`` and ``start`` import Ray Serve on first use, so
``import pinsage_ray.serve`` stays light. See docs/serving.md.
"""

from __future__ import annotations

from typing import Any

from pinsage_ray.serve.service import HTTPError, RecommenderService

__all__ = ["HTTPError", "RecommenderService", "deployment", "start"]


def __getattr__(name: str) -> Any:
    if name in ("deployment", "start", "RecommenderDeployment", "RUN_HEADER",
                "DEFAULT_APP_NAME"):
        from pinsage_ray.serve import app

        return getattr(app, name)
    raise AttributeError(f"module 'pinsage_ray.serve' has no attribute {name!r}")
