"""What the package declares and what it does without its optional parts (no Ray started).

* ``pyproject.toml``: Ray Serve only in the ``serve`` extra, the ``test`` extra pulling the
  extras the tests exercise, hnswlib held below the next minor (``index/_hnsw_io.py`` parses its
  file layout), a torch range that the local CPU wheel (2.13.0) satisfies.
* Without Ray Serve, ``pinsage_ray.serve``'s plain parts still import, and serving (the API and
  ``pinsage-ray serve``) fails with a message naming ``pip install "pinsage-ray[serve]"``.
* ``ray_utils.torch_trainer_class`` uses a private Ray Train module; when it is missing the
  fallback is Ray's own ``TorchTrainer``.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SERVE_HINT = 'pip install "pinsage-ray[serve]"'


@pytest.fixture(scope="module")
def project() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]


def test_serve_is_an_extra_and_the_test_extra_pulls_it(project):
    from packaging.requirements import Requirement
    from packaging.version import Version

    core = [Requirement(r) for r in project["dependencies"]]
    ray = next(r for r in core if r.name == "ray")
    assert "serve" not in ray.extras and {"train", "data"} <= ray.extras
    extras = project["optional-dependencies"]
    serve = {Requirement(r).name: Requirement(r) for r in extras["serve"]}
    assert "serve" in serve["ray"].extras and "starlette" in serve  # app.py imports starlette
    assert any(Requirement(r).name == "pandas" for r in extras["notebook"])  # the notebook's
    own = [Requirement(r) for r in extras["test"] if Requirement(r).name == "pinsage-ray"]
    assert own and {"serve", "notebook"} <= own[0].extras
    hnsw = next(r for r in core if r.name == "hnswlib")
    assert Version("0.8.0") in hnsw.specifier and Version("0.9.0") not in hnsw.specifier
    torch = next(r for r in core if r.name == "torch")
    assert Version("2.13.0") in torch.specifier and Version("2.14.2") in torch.specifier


def test_serving_without_ray_serve_names_the_extra(monkeypatch):
    import ray

    import pinsage_ray.serve as serve_pkg

    # as if ray[serve] were not installed: importing ray.serve fails
    monkeypatch.setitem(sys.modules, "ray.serve", None)
    monkeypatch.delitem(sys.modules, "pinsage_ray.serve.app", raising=False)
    monkeypatch.delattr(serve_pkg, "app", raising=False)
    monkeypatch.delattr(ray, "serve", raising=False)
    with pytest.raises(ImportError, match=SERVE_HINT.replace("[", r"\[").replace("]", r"\]")):
        serve_pkg.import_app()
    with pytest.raises(ImportError, match="serve extra"):
        serve_pkg.start  # noqa: B018 - the lazy attribute imports Ray Serve
    assert serve_pkg.RecommenderService.__name__ == "RecommenderService"  # no Ray Serve needed


def test_cli_serve_without_ray_serve_names_the_extra(tmp_path):
    code = ("import sys; sys.modules['ray.serve'] = None\n"
            "from pinsage_ray.cli import main\n"
            f"sys.exit(main(['serve', {str(tmp_path / 'run')!r}]))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert SERVE_HINT in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_torch_trainer_class_falls_back_without_rays_private_module(monkeypatch):
    from ray.train import ScalingConfig
    from ray.train.torch import TorchTrainer

    from pinsage_ray import ray_utils

    def callbacks(cls: type) -> list[str]:  # building a trainer starts no Ray
        trainer = cls(lambda: None, scaling_config=ScalingConfig(num_workers=1))
        return [type(cb).__name__ for cb in trainer._create_default_callbacks()]

    stock = callbacks(TorchTrainer)
    assert "PlacementGroupCleanerCallback" in stock
    # a Ray instance started by init_ray without a dashboard: the cleaner is left out
    monkeypatch.setitem(ray_utils._STARTED, "context", type("Ctx", (), {"dashboard_url": ""})())
    cls = ray_utils.torch_trainer_class()
    assert cls is not TorchTrainer and issubclass(cls, TorchTrainer)
    assert callbacks(cls) == [c for c in stock if c != "PlacementGroupCleanerCallback"]
    # the private module moved or is gone (another Ray): Ray's own trainer, all its callbacks
    monkeypatch.setitem(sys.modules,
                        "ray.train.v2._internal.callbacks.placement_group_callback", None)
    assert ray_utils.torch_trainer_class() is TorchTrainer
    assert callbacks(ray_utils.torch_trainer_class()) == stock
