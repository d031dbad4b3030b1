"""Test-session settings: no telemetry, no Ray token auth, no hub access, quiet tokenizers; and the Ray
cluster that the session's sweeps share when they test what a sweep does, not how a local Ray behaves."""

import os

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED_CLUSTER_FIXTURE = "cluster_address"
# The shared cluster while it runs (``ray.cluster_utils.Cluster``): started by the first test that asks for it,
# stopped after the last one (``pytest_runtest_teardown``).
_shared_cluster: dict = {}


def uses_shared_cluster(item) -> bool:
    """Whether the test ``item`` (None: no test) runs on the shared Ray cluster."""
    return item is not None and SHARED_CLUSTER_FIXTURE in getattr(item, "fixturenames", ())


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own hook, which reads the group marks
def pytest_collection_modifyitems(items):
    """The tests on the shared Ray cluster (fixture ``cluster_address``) run first, in their collected order,
    and, when the suite runs in several processes (``pytest-xdist``'s ``--dist loadgroup``), all in one of
    them, so that the session starts one such cluster and the other processes run the other tests meanwhile.

    A Ray cluster idle beside them slows every local Ray another test starts (its raylet takes seconds
    longer to register: 12 s launches took 16 s), so the cluster lives only while its own tests run.

    The other ``slow`` tests (each up to about a minute) come next, the fast ones last: a process that
    finishes early then finds short tests to take over, rather than waiting for the other's last long one."""
    items.sort(key=lambda item: (not uses_shared_cluster(item), item.get_closest_marker("slow") is None))
    for item in items:
        if uses_shared_cluster(item):
            item.add_marker(pytest.mark.xdist_group(SHARED_CLUSTER_FIXTURE))


@pytest.fixture
def cluster_address(request, tmp_path_factory):
    """The address of one two-CPU Ray cluster (``ray.cluster_utils.Cluster``, on this machine) for the
    session's ``groupsweep run --address`` sweeps: each joins it as a driver, which saves the start and stop
    of a local Ray (about 3 s a launch). Started for the first test that asks for it, its own processes are
    stopped after the last one. Only a test whose trials need no environment of their own may use it: its
    workers have this process's environment, plus ``GROUPSWEEP_DATA`` naming a folder with a native
    Waterbirds (``CLUSTER_WATERBIRDS_COUNTS``) that the drivers are not told about, as on a cluster whose
    workers hold the data and whose head does not."""
    check_grouped(request)
    if "cluster" not in _shared_cluster:
        import ray
        from ray.cluster_utils import Cluster

        from native_fixtures import write_waterbirds
        from ray_fixtures import CLUSTER_WATERBIRDS_COUNTS

        data = tmp_path_factory.mktemp("cluster-data")
        write_waterbirds(data / "waterbirds", CLUSTER_WATERBIRDS_COUNTS)
        ray.shutdown()  # a Ray left in this process by an earlier test would lend the cluster its node address
        _shared_cluster["cluster"] = Cluster(
            initialize_head=True, connect=False,
            head_node_args={"num_cpus": 2, "object_store_memory": 200 * 1024 * 1024, "include_dashboard": False,
                            "env_vars": {"GROUPSWEEP_DATA": str(data)}})
    return _shared_cluster["cluster"].address


def check_grouped(request) -> None:
    """Fail a shared-cluster test, in a ``--dist loadgroup`` worker, when its group was lost: pytest-xdist passes
    the group to its scheduler as a ``@group`` suffix of the test's id, which pytest 9.2 no longer lets it add
    (pytest-xdist issue #1386; hence ``pytest<9.2`` in the ``test`` extra). Without it the group's tests are
    spread over all the processes, each starting a cluster of its own beside the others' local Rays."""
    if getattr(request.config.option, "loadgroup", False) and not request.node.nodeid.endswith(
            f"@{SHARED_CLUSTER_FIXTURE}"):
        pytest.fail(f"pytest-xdist did not group {request.node.nodeid} with the other shared-cluster tests: with "
                    f"pytest {pytest.__version__} --dist loadgroup ignores groups (pytest-xdist issue #1386); "
                    "install pytest<9.2", pytrace=False)


def pytest_runtest_teardown(item, nextitem):
    """Stop the shared cluster after the last test that uses it (the next test runs without it, or none
    follows)."""
    if "cluster" in _shared_cluster and uses_shared_cluster(item) and not uses_shared_cluster(nextitem):
        _shared_cluster.pop("cluster").shutdown()


def pytest_sessionfinish(session):
    """Stop the shared cluster if a session ended (interrupted) while it ran."""
    if "cluster" in _shared_cluster:
        _shared_cluster.pop("cluster").shutdown()
