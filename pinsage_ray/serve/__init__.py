"""Online serving of a trained run on Ray Serve (``pinsage-ray serve RUN_DIR``).

Public API: :func:`deployment` (the Serve application of a run), :func:`start` (Ray + Serve
on a host and port, HAProxy ingress by default, then the application), :func:`client` (the
same answers through a ``DeploymentHandle``, without HTTP) and :class:`RecommenderService`
(the JSON API as a plain class, without Ray). ``deployment`` and ``start`` import Ray Serve
on first use, so ``import pinsage_ray.serve`` stays light and works without Ray Serve, which
is the ``serve`` extra (``pip install "pinsage-ray[serve]"``); :func:`import_app` names it when it is missing.
See docs/serving.md.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from pinsage_ray.serve.service import HTTPError, RecommenderService

__all__ = ["HTTPError", "RecommenderService", "client", "deployment", "import_app", "start",
           "start_serve", "serving_mode"]

#: The install line that brings Ray Serve and starlette (pyproject.toml's ``serve`` extra).
SERVE_INSTALL = 'pip install "pinsage-ray[serve]"'


def import_app() -> ModuleType:
    """:mod:`pinsage_ray.serve.app` (Ray Serve's side of serving).

    Raises:
        ImportError: Ray Serve or starlette is not installed; the message names
            ``pip install "pinsage-ray[serve]"``.
    """
    try:
        return importlib.import_module("pinsage_ray.serve.app")
    except ImportError as err:
        missing = err.name or ""
        if missing.startswith("pinsage_ray"):  # our own bug: not a missing extra
            raise
        raise ImportError(f"serving needs Ray Serve, which is not installed ({err}); install "
                          f"the serve extra: {SERVE_INSTALL}", name=err.name) from err


def __getattr__(name: str) -> Any:
    if name in ("deployment", "start", "start_serve", "serving_mode", "RecommenderDeployment",
                "RUN_HEADER", "DEFAULT_APP_NAME"):
        return getattr(import_app(), name)
    if name in ("client", "ServeClient"):
        import_app()  # the missing-extra message, if Ray Serve is missing
        return getattr(importlib.import_module("pinsage_ray.serve.handle"), name)
    raise AttributeError(f"module 'pinsage_ray.serve' has no attribute {name!r}")
