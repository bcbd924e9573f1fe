"""Offline checks of the repo-root ``cluster.yaml`` (Ray cluster launcher config).

Uses Ray's own launcher validation, the same two steps ``ray up`` runs before it
talks to AWS (``ray.autoscaler._private.commands._bootstrap_config``):

* ``prepare_config(config: dict) -> dict`` merges the dict (not a path) with the
  provider's ``defaults.yaml`` (a deep copy; the input is left untouched), merges
  ``setup_commands`` into ``head_setup_commands`` / ``worker_setup_commands`` and
  fills per-node-type ``min_workers`` / ``max_workers``.
* ``validate_config(config: dict) -> None`` checks ``ray-schema.json`` with
  jsonschema (raises ``jsonschema.ValidationError``) plus cross-field rules
  (raises ``ValueError``). On an unprepared dict it raises ``RuntimeError``
  because ``cluster_synced_files`` only comes from the defaults.

Both are private Ray APIs (checked against Ray 2.60); the tests pin the behaviour
relied on here. Nothing touches the network or AWS: ``ray up`` would next call
EC2 to auto-detect instance resources and bootstrap IAM / security groups, which
is not exercised.
"""

from __future__ import annotations

import copy
import re
import socket
from pathlib import Path

import jsonschema
import pytest
import yaml

from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER_YAML = Path(__file__).resolve().parents[1] / "cluster.yaml"
CLUSTER_DOC = Path(__file__).resolve().parents[1] / "docs" / "cluster.md"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"

SHARD_RESOURCE = "pinsage_shard"
TRAINER_RESOURCE = "pinsage_trainer"


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    def _refuse(*args, **kwargs):
        raise AssertionError("test_cluster_yaml must not open network connections")

    monkeypatch.setattr(socket.socket, "connect", _refuse)
    monkeypatch.setattr(socket, "create_connection", _refuse)


@pytest.fixture
def raw() -> dict:
    """cluster.yaml exactly as `ray up` loads it (yaml.safe_load)."""
    with open(CLUSTER_YAML) as f:
        config = yaml.safe_load(f)
    assert isinstance(config, dict)
    return config


@pytest.fixture
def prepared(raw) -> dict:
    return prepare_config(copy.deepcopy(raw))


def _node_types_with(config: dict, resource: str) -> list[str]:
    return [
        name
        for name, node_type in config["available_node_types"].items()
        if node_type.get("resources", {}).get(resource, 0) > 0
    ]


def _all_commands(config: dict) -> list:
    keys = (
        "initialization_commands",
        "setup_commands",
        "head_setup_commands",
        "worker_setup_commands",
        "head_start_ray_commands",
        "worker_start_ray_commands",
    )
    per_type = [cmd for t in config["available_node_types"].values()
                for cmd in (t.get("worker_setup_commands") or [])]
    return [cmd for key in keys for cmd in (config.get(key) or [])] + per_type


def _setup_commands_by_type(prepared: dict) -> dict[str, list[str]]:
    """What each node type runs to set up, as the launcher picks it: the head runs
    ``head_setup_commands`` (``setup_commands`` merged in by prepare_config); a worker type
    runs its own ``worker_setup_commands`` when it has them (they replace the merged global
    list: ``StandardAutoscaler._get_node_type_specific_fields``), else the global list."""
    out = {}
    for name, node_type in prepared["available_node_types"].items():
        if name == prepared["head_node_type"]:
            out[name] = prepared["head_setup_commands"]
        else:
            out[name] = node_type.get("worker_setup_commands",
                                      prepared["worker_setup_commands"])
    return out


def _first(commands: list[str], pattern: str) -> int | None:
    return next((i for i, c in enumerate(commands) if re.search(pattern, c)), None)


def _image_ray_version(raw: dict) -> str:
    return re.fullmatch(r"rayproject/ray:([\d.]+)-py\d+-\w+", raw["docker"]["image"]).group(1)


# ---------------------------------------------------------------- Ray validation


def test_prepared_config_passes_ray_validation(prepared):
    assert validate_config(prepared) is None


def test_unprepared_config_is_rejected_by_validate_config(raw):
    # Pinned behaviour: validate_config expects prepare_config's output.
    with pytest.raises(RuntimeError, match="cluster_synced_files"):
        validate_config(raw)


def test_validate_config_requires_a_dict():
    with pytest.raises(ValueError, match="not a dictionary"):
        validate_config(str(CLUSTER_YAML))


def test_prepare_config_leaves_input_untouched(raw):
    before = copy.deepcopy(raw)
    prepare_config(raw)
    assert raw == before


def test_prepare_config_merges_setup_commands(raw, prepared):
    common = raw["setup_commands"]
    assert prepared["head_setup_commands"][: len(common)] == common
    assert prepared["worker_setup_commands"][: len(common)] == common
    # The head runs the AWS autoscaler, which needs boto3.
    assert any("boto3" in cmd for cmd in prepared["head_setup_commands"])


def test_prepare_config_fills_worker_bounds(prepared):
    node_types = prepared["available_node_types"]
    assert node_types[prepared["head_node_type"]]["max_workers"] == 0
    for node_type in node_types.values():
        assert isinstance(node_type["min_workers"], int)
        assert isinstance(node_type["max_workers"], int)


# ------------------------------------------------------- project invariants


def test_cluster_identity_and_provider(raw):
    assert raw["cluster_name"] == "pinsage-ray"
    assert raw["provider"]["type"] == "aws"
    assert raw["provider"]["region"] == "us-west-2"
    assert isinstance(raw["max_workers"], int) and raw["max_workers"] > 0


def test_head_node_type_exists(raw):
    head = raw["head_node_type"]
    assert head in raw["available_node_types"]
    assert raw["available_node_types"][head]["node_config"]["InstanceType"]


def test_shard_resource_only_on_cpu_workers(raw):
    shard_types = _node_types_with(raw, SHARD_RESOURCE)
    assert len(shard_types) == 1, shard_types
    (name,) = shard_types
    node_type = raw["available_node_types"][name]
    assert name != raw["head_node_type"]
    # One unit per node, so {"pinsage_shard": 1} means one shard per node.
    assert node_type["resources"][SHARD_RESOURCE] == 1
    assert node_type["resources"].get("GPU", 0) == 0
    assert node_type.get("max_workers", raw["max_workers"]) >= 1


def test_trainer_resource_only_on_gpu_workers(raw):
    trainer_types = _node_types_with(raw, TRAINER_RESOURCE)
    assert len(trainer_types) == 1, trainer_types
    (name,) = trainer_types
    node_type = raw["available_node_types"][name]
    assert name != raw["head_node_type"]
    assert node_type["resources"][TRAINER_RESOURCE] >= 1
    assert node_type["resources"].get("GPU", 0) >= 1
    assert SHARD_RESOURCE not in node_type["resources"]
    # An EC2 GPU family (g4dn, g5, g6, p4d, p5, ...).
    assert re.match(r"^[gp]\d", node_type["node_config"]["InstanceType"])
    assert node_type.get("max_workers", raw["max_workers"]) >= 1


def test_head_advertises_no_project_resources(raw):
    head = raw["available_node_types"][raw["head_node_type"]]
    assert SHARD_RESOURCE not in head["resources"]
    assert TRAINER_RESOURCE not in head["resources"]
    assert head["resources"].get("GPU", 0) == 0


def test_min_workers_fit_in_global_max(raw):
    node_types = raw["available_node_types"].values()
    assert sum(t.get("min_workers", 0) for t in node_types) <= raw["max_workers"]
    for node_type in node_types:
        assert node_type.get("min_workers", 0) <= node_type.get(
            "max_workers", raw["max_workers"]
        )


def test_every_node_type_installs_pinsage_ray(prepared):
    for name, commands in _setup_commands_by_type(prepared).items():
        assert _first(commands, r"\bpip install\b.*pinsage[-_]ray") is not None, (name, commands)


def test_torch_build_fits_each_node_type(prepared):
    """CPU node types take torch from PyTorch's CPU index before pinsage-ray (else pip pulls
    PyPI's CUDA build, several GB); GPU node types take the CUDA build."""
    for name, commands in _setup_commands_by_type(prepared).items():
        torch_at = _first(commands, r"\bpip install\b.*[\"' ]torch\b")
        pinsage_at = _first(commands, r"\bpip install\b.*pinsage[-_]ray")
        assert torch_at is not None and torch_at < pinsage_at, (name, commands)
        gpu = prepared["available_node_types"][name]["resources"].get("GPU", 0) > 0
        assert (CPU_INDEX in commands[torch_at]) is not gpu, (name, commands[torch_at])
    # no node type gets a pinsage-ray install ahead of its torch line from the shared list
    assert not [c for c in prepared.get("setup_commands", []) if "pip install" in c]


def test_install_lines_pin_the_image_ray_version(raw, prepared):
    version = _image_ray_version(raw)
    for name, commands in _setup_commands_by_type(prepared).items():
        line = commands[_first(commands, r"pinsage[-_]ray")]
        assert re.search(rf"[\"' ]ray(\[[\w,]+\])?=={re.escape(version)}[\"' ]", line + " "), \
            (name, line)
    head = _setup_commands_by_type(prepared)[raw["head_node_type"]]
    # `ray job submit` needs the dashboard's job server: the `cluster` extra on the head
    assert re.search(r"pinsage-ray\[[\w,]*cluster", " ".join(head)), head


# --------------------------------------------- cluster.yaml and docs/cluster.md agree


def test_docs_table_matches_node_types(raw):
    """docs/cluster.md's node-type table gives each type's instance and worker range."""
    doc = CLUSTER_DOC.read_text()
    for name, node_type in raw["available_node_types"].items():
        if name == raw["head_node_type"]:
            continue
        row = re.search(rf"^\| `{name}` +\| ([\w.]+), (\d+)–(\d+) ", doc, re.M)
        assert row, f"no row for {name} in {CLUSTER_DOC}"
        assert row.group(1) == node_type["node_config"]["InstanceType"]
        assert (int(row.group(2)), int(row.group(3))) == (
            node_type.get("min_workers", 0), node_type["max_workers"]), name


def test_shard_node_type_keeps_one_node_up_as_docs_say(raw):
    """The shards size their request from the pinsage_shard units up when they start and ask
    for none without any, so the autoscaler adds shard nodes only when one is up."""
    (name,) = _node_types_with(raw, SHARD_RESOURCE)
    assert raw["available_node_types"][name]["min_workers"] >= 1
    doc = CLUSTER_DOC.read_text()
    assert f"min_workers: {raw['available_node_types'][name]['min_workers']}" in doc


def test_docs_laptop_install_pins_the_image_ray_version(raw):
    doc = CLUSTER_DOC.read_text()
    pins = re.findall(r'pip install "pinsage-ray\[cluster\]" "ray\[default\]==([\d.]+)"', doc)
    assert pins and set(pins) == {_image_ray_version(raw)}, pins
    assert "is planned" not in doc  # the CLI exists: no stale caveats


def test_all_commands_are_plain_strings(raw):
    # A mis-quoted shell line containing ": " would parse as a mapping.
    commands = _all_commands(raw)
    assert commands
    for cmd in commands:
        assert isinstance(cmd, str), cmd


def test_docker_images_agree_on_ray_and_python(raw):
    images = [raw["docker"]["image"]]
    images += [
        t["docker"]["worker_image"]
        for t in raw["available_node_types"].values()
        if "worker_image" in t.get("docker", {})
    ]
    tags = [re.fullmatch(r"rayproject/ray:([\d.]+)-py(\d+)-\w+", i) for i in images]
    assert all(tags), images
    assert len({m.group(1) for m in tags}) == 1, images
    assert len({m.group(2) for m in tags}) == 1, images
    assert int(tags[0].group(2)) >= 310  # pinsage-ray requires Python >= 3.10


# ------------------------------------------- negative: broken copies must fail


def _drop_provider(c):
    del c["provider"]


def _unknown_top_level_field(c):
    c["max_worker"] = 3  # typo of max_workers


def _fractional_custom_resource(c):
    name = _node_types_with(c, SHARD_RESOURCE)[0]
    c["available_node_types"][name]["resources"][SHARD_RESOURCE] = 0.5


def _unknown_node_type_field(c):
    c["available_node_types"][c["head_node_type"]]["instance_type"] = "m6i.large"


def _node_type_without_resources(c):
    name = _node_types_with(c, TRAINER_RESOURCE)[0]
    del c["available_node_types"][name]["resources"]


def _head_type_not_defined(c):
    c["head_node_type"] = "no_such_type"


def _min_workers_exceed_global_max(c):
    name = _node_types_with(c, SHARD_RESOURCE)[0]
    c["available_node_types"][name]["min_workers"] = c["max_workers"] + 1
    c["available_node_types"][name]["max_workers"] = c["max_workers"] + 1


def _setup_command_not_a_string(c):
    c["setup_commands"].append({"pip install pinsage-ray": None})


@pytest.mark.parametrize(
    "break_config, error",
    [
        (_unknown_top_level_field, jsonschema.ValidationError),
        (_fractional_custom_resource, jsonschema.ValidationError),
        (_unknown_node_type_field, jsonschema.ValidationError),
        (_node_type_without_resources, jsonschema.ValidationError),
        (_setup_command_not_a_string, jsonschema.ValidationError),
        (_head_type_not_defined, ValueError),
        (_min_workers_exceed_global_max, ValueError),
    ],
    ids=lambda v: getattr(v, "__name__", "").lstrip("_"),
)
def test_broken_copy_fails_validation(raw, break_config, error):
    broken = copy.deepcopy(raw)
    break_config(broken)
    with pytest.raises(error):
        validate_config(prepare_config(broken))
    # The untouched config still passes, so the failure is due to the breakage.
    validate_config(prepare_config(copy.deepcopy(raw)))


def test_missing_provider_fails(raw):
    broken = copy.deepcopy(raw)
    _drop_provider(broken)
    # prepare_config needs the provider to pick its defaults.yaml ...
    with pytest.raises(KeyError, match="provider"):
        prepare_config(broken)
    # ... and the schema requires it even on an otherwise prepared config.
    prepared = prepare_config(copy.deepcopy(raw))
    del prepared["provider"]
    with pytest.raises(jsonschema.ValidationError, match="provider"):
        validate_config(prepared)
