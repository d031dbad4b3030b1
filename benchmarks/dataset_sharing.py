"""Dataset sharing: trials read their dataset from Ray's object store instead of each generating it.

For one sweep spec (``--trials`` trials on synthetic-waterbirds of ``--size`` training examples), the
launcher's ``share_datasets`` loads the dataset once in the driver and ``ray.put``s it (timed). Then
``--trials`` Ray actors, one per trial and all at once, take the dataset the two ways a trial can:

* without sharing: ``load_config_dataset`` (generate it, what every trial did before);
* with sharing: ``ray.get`` of the shared reference (what ``train_trial`` does), zero-copy for the
  numpy arrays, which stay in the node's one shared copy.

Each actor reads every pixel once (as training does over an epoch) and reports its load time and the
growth of its unique memory (USS: pages no other process shares) and resident memory (RSS, which
counts the mapped shared pages too). Modes alternate for ``--repeats`` rounds, each with fresh actors.

Usage from the repository root: ``python benchmarks/dataset_sharing.py [--size 20000] [--trials 4]``.
"""

from __future__ import annotations

import argparse
import statistics

from _common import machine, start_local_ray


def sharing_spec(size: int, trials: int):
    """A sweep of ``trials`` trials on one synthetic-waterbirds dataset (only its datasets matter here)."""
    from sweeps.spec import build_spec

    return build_spec({
        "name": "sharing",
        "datasets": {"synthetic-waterbirds": {"options": {"size": size, "val_size": size // 4,
                                                          "test_size": size // 4}}},
        "models": ["toy-resnet-xs"], "methods": ["none"], "seeds": list(range(trials)),
        "resources": {"cpu": 1, "gpu": 0},
    })


def make_probe():
    """The Ray actor class measuring one trial's dataset load."""
    import ray

    @ray.remote(num_cpus=0)
    class Probe:
        """One trial process: takes the dataset and reports seconds, USS and RSS growth (MiB)."""

        def take(self, config: dict, ref_box: list | None) -> dict:
            import gc
            import time

            import numpy as np
            import psutil

            from trainables.config import TrainConfig
            from trainables.config_data import load_config_dataset

            gc.collect()
            process = psutil.Process()
            before = process.memory_full_info()
            started = time.perf_counter()
            if ref_box is None:
                self.dataset = load_config_dataset(TrainConfig.from_dict(config))
            else:
                self.dataset = ray.get(ref_box[0])
            seconds = time.perf_counter() - started
            checksum = sum(int(np.asarray(split.inputs, dtype=np.uint8).sum(dtype=np.uint64))
                           for split in self.dataset.splits.values())
            after = process.memory_full_info()
            return {"seconds": seconds, "uss_mb": (after.uss - before.uss) / 2**20,
                    "rss_mb": (after.rss - before.rss) / 2**20, "checksum": checksum}

    return Probe


def main(argv: list[str] | None = None) -> None:
    """Measure both modes, alternating, and print load time and memory per trial."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=20000, help="training examples (val, test: a quarter each)")
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)

    import time

    import ray

    from sweeps.launcher import dataset_nbytes, share_datasets
    from trainables.config import TrainConfig
    from trainables.config_data import dataset_key, load_config_dataset

    spec = sharing_spec(args.size, args.trials)
    print(f"machine: {machine()}")
    startup = start_local_ray(2, object_store_bytes=1024 * 2**20)
    started = time.perf_counter()
    refs = share_datasets(spec)
    put_seconds = time.perf_counter() - started
    config = spec.trials[0].config
    nbytes = dataset_nbytes(load_config_dataset(TrainConfig.from_dict(config)))
    print(f"dataset: synthetic-waterbirds, {args.size} train examples, {nbytes / 2**20:.1f} MiB; "
          f"{args.trials} trials at once; Ray start-up {startup:.1f} s; "
          f"driver load + ray.put once: {put_seconds:.2f} s ({len(set(refs.values()))} shared object)")
    Probe = make_probe()
    rows = {"without sharing (each trial loads)": [], "with sharing (ray.get)": []}
    for _ in range(args.repeats):
        for label, box in zip(rows, (None, [refs[dataset_key(spec.trials[0].config)]])):
            probes = [Probe.remote() for _ in spec.trials]
            results = ray.get([probe.take.remote(trial.config, box) for probe, trial in zip(probes, spec.trials)])
            assert len({r["checksum"] for r in results}) == 1, "trials saw different data"
            rows[label].extend(results)
            for probe in probes:
                ray.kill(probe)
    print(f"{'per trial (mean over ' + str(args.trials * args.repeats) + ')':<38}{'load s':>8}{'USS MiB':>9}{'RSS MiB':>9}")
    means = {}
    for label, results in rows.items():
        means[label] = {key: statistics.mean(r[key] for r in results) for key in ("seconds", "uss_mb", "rss_mb")}
        m = means[label]
        print(f"{label:<38}{m['seconds']:8.3f}{m['uss_mb']:9.1f}{m['rss_mb']:9.1f}")
    without, shared = means.values()
    print(f"sharing: load time x{without['seconds'] / max(shared['seconds'], 1e-9):.0f} faster, unique memory per "
          f"trial {without['uss_mb']:.1f} -> {shared['uss_mb']:.1f} MiB (one {nbytes / 2**20:.1f} MiB copy per node)")
    print(f"machine after: {machine()}")


if __name__ == "__main__":
    main()
