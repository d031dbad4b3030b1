"""cluster.yaml passes Ray's own cluster-launcher validation and describes the intended cluster."""

import copy
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER_YAML = Path(__file__).resolve().parents[1] / "cluster.yaml"


def load() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def test_cluster_yaml_passes_ray_validation():
    config = prepare_config(copy.deepcopy(load()))
    validate_config(config)


def test_validator_rejects_a_broken_copy():
    broken = copy.deepcopy(load())
    broken["available_node_types"]["gpu-1x"]["min_workers"] = "none"
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(broken))


def test_head_plus_autoscaling_gpu_workers_that_install_the_package():
    config = load()
    types = config["available_node_types"]
    head = config["head_node_type"]
    assert head in types and types[head]["resources"].get("GPU", 0) == 0
    gpu_types = [t for name, t in types.items() if name != head]
    assert gpu_types and all(t["resources"]["GPU"] >= 1 for t in gpu_types)
    assert all(t["max_workers"] > t["min_workers"] for t in gpu_types)  # the autoscaler adds and removes them
    assert "." in config["file_mounts"].values()
    mount = next(remote for remote, local in config["file_mounts"].items() if local == ".")
    assert any(f"pip install -q -e {mount}" in command for command in config["setup_commands"])
    assert any("GROUPSWEEP_STORAGE=s3://" in command for command in config["setup_commands"])


def test_every_node_type_names_its_image():
    """Without an ImageId Ray starts its default AMI (Ubuntu 18.04 DLAMI V71), whose Python is older than the
    project's ``requires-python``; the file leaves the region's AMI id to fill in, as it does the bucket."""
    for name, node_type in load()["available_node_types"].items():
        assert node_type["node_config"].get("ImageId") == "YOUR-AMI", name
    assert "python3 -m pip install" in " ".join(load()["setup_commands"])


def test_workers_get_the_datasets_and_the_pretrained_weights_before_any_trial():
    """groupsweep never downloads: every worker syncs the data to GROUPSWEEP_DATA's folder and the Hugging
    Face hub cache to the folder the model registry reads by default."""
    config = load()
    setup = " ".join(config["worker_setup_commands"])
    exported = next(command for command in config["setup_commands"] if "GROUPSWEEP_DATA=" in command)
    data_folder = exported.split("GROUPSWEEP_DATA=", 1)[1].split()[0].replace("$HOME", "~")
    assert f"aws s3 sync --only-show-errors s3://YOUR-BUCKET/groupsweep-data {data_folder}" in setup
    assert "aws s3 sync --only-show-errors s3://YOUR-BUCKET/groupsweep-hf-hub ~/.cache/huggingface/hub" in setup
    assert "HF_HOME" not in CLUSTER_YAML.read_text() and "HF_HUB_CACHE" not in CLUSTER_YAML.read_text()


def test_the_dashboard_stays_private():
    """The head's dashboard (which runs jobs) listens on its loopback interface only; nothing binds 0.0.0.0."""
    config = load()
    head_start = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start
    assert "0.0.0.0" not in CLUSTER_YAML.read_text()
