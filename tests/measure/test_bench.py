"""`harness bench` on CPU with tiny registered models: complete records, nulls with reasons,
OOM rows, `all` (one per architecture, unbuildable ones skipped) and user errors."""
import json
import subprocess
import sys
from pathlib import Path

import after_torch
import pytest
import torch
from conftest import SMALL_Q2L
from paths import REPO

from harness import records
from harness.cli import main
from harness.inputs.yaml_files import dump_yaml, read_yaml
from harness.models import build_from_arch, register_model

GPU_FIELDS = ("peak_vram_mib", "torch_max_allocated_mib", "torch_max_reserved_mib", "energy_j_per_image")


class TinyNet(torch.nn.Module):
    def __init__(self, num_classes, oom_from=None):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8, num_classes)
        self.oom_from = oom_from

    def forward(self, x):
        if self.oom_from is not None and x.shape[0] >= self.oom_from:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (fake)")
        return self.fc(self.conv(x).mean((2, 3)))


@register_model
def tiny_bench_net(num_classes=5):
    return TinyNet(num_classes)


@register_model
def tiny_bench_oom(num_classes=5, oom_from=4):
    return TinyNet(num_classes, oom_from)


class BrokenNet(TinyNet):
    def forward(self, x):
        raise RuntimeError("CUDNN_STATUS_INTERNAL_ERROR (fake)")


@register_model
def tiny_bench_broken(num_classes=5):
    return BrokenNet(num_classes)


def _entry(family, arch, resolution=32, batch_size=4):
    entry = {"family": family, "arch": arch, "released": False,
             "paper": {"title": "t", "table": "T1", "row": "r", "metrics": {"mAP": None}},
             "eval": {"resolution": resolution, "resize": "squish", "normalize": "imagenet", "image_set": "all",
                      "protocol": family, "batch_size": batch_size}}
    if family == "mlspl":
        entry["train"] = {"loss": "AN", "mode": "linear"}
    return entry


@pytest.fixture
def manifest(tmp_path):
    models = {
        "tiny-a": _entry("q2l", {"name": "tiny_bench_net", "num_classes": 5}),
        "tiny-oom": _entry("asl", {"name": "tiny_bench_oom", "num_classes": 5, "oom_from": 4}, batch_size=16),
        "tiny-same-arch": _entry("mlspl", {"name": "tiny_bench_net", "num_classes": 5}),  # same as tiny-a
        "tiny-unbuilt": _entry("q2l", {"name": "no_such_builder_yet"}),
        "tiny-broken": _entry("asl", {"name": "tiny_bench_broken", "num_classes": 5}),
    }
    path = tmp_path / "manifest.yaml"
    path.write_text(dump_yaml({"schema": 1, "models": models}))
    return path


def _records(out):
    return {json.loads(p.read_text())["model"]["id"]: json.loads(p.read_text())
            for p in sorted(Path(out).glob("*/*/record.json"))}


def _bench(manifest, out, *extra):
    return main(["bench", *extra, "--device", "cpu", "--manifest", str(manifest), "--out", str(out),
                 "--iters", "2", "--warmup", "1"])


def test_bench_on_cpu_writes_a_complete_record(manifest, tmp_path, capsys):
    out = tmp_path / "runs"
    assert _bench(manifest, out, "tiny-a", "--batch-size", "1", "4", "16") == 0
    rec = _records(out)["tiny-a"]
    assert rec["schema"] == records.SCHEMA and rec["kind"] == "bench" and rec["run_id"]
    assert rec["smoke"] is True and rec["smoke_reasons"] == ["random weights"]
    assert rec["checkpoint"]["random_weights"] is True
    assert rec["model"]["family"] == "q2l" and rec["environment"]
    assert rec["started_at"] <= rec["finished_at"]
    bench = rec["bench"]
    assert bench["resolution"] == 32 and bench["device"]["type"] == "cpu"
    assert bench["params"] == sum(p.numel() for p in TinyNet(5).parameters())
    assert bench["gflops"] > 0
    assert bench["options"] == {"amp": False, "channels_last": False, "compile": False}
    assert [r["batch_size"] for r in bench["results"]] == [1, 4, 16]
    for row in bench["results"]:
        assert row["oom"] is False and row["images_per_s"] > 0 and row["peak_rss_mib"] > 0
        assert row["latency_ms"]["p50"] <= row["latency_ms"]["p99"]
        for key in GPU_FIELDS:
            assert row[key] is None and "no GPU" in row["reasons"][key]
    fits = bench["fits"]
    assert fits["budget_mib"] == 12288 and fits["inference_max_batch"] is None and fits["train_max_batch"] is None
    assert set(fits["reasons"].values()) == {"needs a GPU"}
    m = rec["measurement"]
    assert m["batch_size"] == 4  # the model's evaluation batch size
    assert m["n_images"] == 4 * 2 and m["peak_vram_mib"] is None and "no GPU" in m["reasons"]["peak_vram_mib"]
    printed = capsys.readouterr().out
    assert "tiny-a: wrote" in printed and "needs a GPU" in printed and "GFLOPs" in printed


def test_bench_records_oom_and_goes_on(manifest, tmp_path):
    out = tmp_path / "runs"
    assert _bench(manifest, out, "tiny-oom", "--batch-size", "2", "8", "4", "1") == 0
    bench = _records(out)["tiny-oom"]["bench"]
    assert [(r["batch_size"], r["oom"]) for r in bench["results"]] == [(2, False), (8, True), (4, True), (1, False)]
    assert bench["results"][1]["images_per_s"] is None
    assert _records(out)["tiny-oom"]["measurement"]["batch_size"] == 2  # batch 16 not measured: the largest that ran


def test_bench_options_are_recorded(manifest, tmp_path):
    out = tmp_path / "runs"
    assert _bench(manifest, out, "tiny-a", "--batch-size", "2", "--amp", "bf16", "--channels-last",
                  "--vram-budget", "8000MiB") == 0
    bench = _records(out)["tiny-a"]["bench"]
    assert bench["options"] == {"amp": "bf16", "channels_last": True, "compile": False}
    assert bench["fits"]["budget_mib"] == 8000


def test_bench_all_one_per_architecture_and_goes_on_after_failures(manifest, tmp_path, capsys):
    out = tmp_path / "runs"
    assert _bench(manifest, out, "all", "--batch-size", "1") == 0
    assert sorted(_records(out)) == ["tiny-a", "tiny-oom"]  # tiny-same-arch shares tiny-a's arch
    captured = capsys.readouterr()
    assert "tiny-unbuilt failed, going on" in captured.err  # an architecture with no builder: a failure as any
    assert "tiny-broken failed, going on: RuntimeError" in captured.err  # one failure does not stop the rest
    assert "not measured: " in captured.out and "tiny-unbuilt (failed" in captured.out
    assert "tiny-broken (failed: RuntimeError" in captured.out


@pytest.mark.parametrize("argv,words", [
    (["tiny-a", "--vram-budget", "12XB"], "VRAM budget"),
    (["tiny-a", "--batch-size", "0"], "batch sizes"),
    (["no-such-model"], "unknown model"),
    (["tiny-unbuilt"], "no builder for architecture"),
    (["tiny-a", "--min-time-s", "-1"], "--min-time-s"),
])
def test_bench_user_errors_exit_2(manifest, tmp_path, capsys, argv, words):
    assert _bench(manifest, tmp_path / "runs", *argv) == 2
    assert words in capsys.readouterr().err
    assert not list((tmp_path / "runs").glob("*/*/record.json"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_bench_cuda_without_gpu_is_a_user_error(manifest, tmp_path, capsys):
    argv = ["bench", "tiny-a", "--device", "cuda", "--manifest", str(manifest), "--out", str(tmp_path)]
    assert main(argv) == 2
    assert "no CUDA GPU" in capsys.readouterr().err


REPO = REPO


DATA_PACKAGES = ("pycocotools", "gdown")


# In a fresh interpreter (one answers every such check of the run: tests/helpers/after_torch.py), from
# another folder: the checkout found by PYTHONPATH, with the data packages made unimportable.
BENCH_LOADS_WITHOUT_DATA_PACKAGES = after_torch.register("bench: loaded without data packages", """
import sys
sys.modules['pycocotools'] = sys.modules['gdown'] = None
from harness.cli import build_parser
build_parser(only='bench')  # what main() loads
answer = True
""")


def test_bench_runs_from_a_bare_checkout_without_data_packages(tmp_path, monkeypatch):
    """As on a lent GPU machine (benchmarks/measure_gpu.sh): no install, no pycocotools, no gdown; a
    small Q2L with the authors' layout. A fresh interpreter loads the command's modules from the checkout
    (a module-level import of a data package fails there); the run itself goes in this process with
    the data packages made unimportable (a lazy import fails here as it would there): the fresh
    interpreter then spends no time on torch's first-call set-up of the FLOP counter (about 2.5 s)."""
    assert after_torch.answer(BENCH_LOADS_WITHOUT_DATA_PACKAGES) is True

    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(dump_yaml({"schema": 1, "models": {"small-q2l": _entry("q2l", SMALL_Q2L, resolution=64)}}))
    for name in [m for m in sys.modules if m.split(".")[0] in DATA_PACKAGES] + list(DATA_PACKAGES):
        monkeypatch.setitem(sys.modules, name, None)  # `import gdown`, `from pycocotools.coco import COCO` fail
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HARNESS_GIT_COMMIT", "a" * 40)
    argv = ["bench", "small-q2l", "--manifest", str(manifest), "--device", "cpu", "--batch-size", "1", "--iters", "1",
            "--warmup", "0", "--out", str(tmp_path / "measured")]
    assert main(argv) == 0
    rec = _records(tmp_path / "measured")["small-q2l"]
    params = sum(p.numel() for p in build_from_arch(SMALL_Q2L).parameters())
    assert rec["bench"]["params"] == params and rec["bench"]["resolution"] == 64
    assert rec["environment"]["git_commit"] in ("a" * 40, _git_head())


def _git_head():
    done = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
    return done.stdout.strip()


def test_bench_checks_out_before_measuring(manifest, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert _bench(manifest, blocker / "runs", "tiny-a") == 2
    assert "--runs" in capsys.readouterr().err


# ------------------------------------------------------------------ hostile numbers (issue 23)

@pytest.mark.parametrize("argv", [["--min-time-s", "nan"], ["--min-time-s", "inf"], ["--warmup-s", "nan"],
                                  ["--min-time-s", "1e9"], ["--iters", "1000000000"], ["--warmup", "1000000000"]])
def test_bench_refuses_nan_inf_and_endless_timings_before_any_model(manifest, tmp_path, capsys, argv):
    argv = ["bench", "tiny-a", "--device", "cpu", "--manifest", str(manifest), "--out", str(tmp_path / "runs"), *argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert argv[-2] in err and "Traceback" not in err and ("limit" in err or "seconds from 0" in err)
    assert not (tmp_path / "runs").exists()


class HostAllocatorNet(TinyNet):
    """Fails as torch's CPU allocator does when a batch does not fit in the host's memory."""

    def forward(self, x):
        if x.shape[0] >= 8:
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate "
                               "memory: you tried to allocate 60211200000 bytes. Error code 12")
        return super().forward(x)


@register_model
def tiny_bench_host_oom(num_classes=5):
    return HostAllocatorNet(num_classes)


def test_a_host_allocation_failure_is_recorded_as_out_of_memory_and_the_sweep_goes_on(manifest, tmp_path):
    models = read_yaml(manifest.read_text())
    models["models"]["tiny-host"] = _entry("asl", {"name": "tiny_bench_host_oom", "num_classes": 5})
    manifest.write_text(dump_yaml(models))
    assert _bench(manifest, tmp_path / "runs", "tiny-host", "--batch-size", "2", "16", "4") == 0
    results = _records(tmp_path / "runs")["tiny-host"]["bench"]["results"]
    assert [(r["batch_size"], r["oom"]) for r in results] == [(2, False), (16, True), (4, False)]
    assert "DefaultCPUAllocator" in results[1]["reasons"]["images_per_s"]


def test_a_cpu_batch_past_free_memory_is_out_of_memory_before_it_is_allocated(manifest, tmp_path, monkeypatch):
    monkeypatch.setattr("harness.measure.throughput.host_memory_available", lambda: 10 * 3 * 32 * 32 * 4)
    assert _bench(manifest, tmp_path / "runs", "tiny-a", "--batch-size", "2", "100000", "4") == 0
    results = _records(tmp_path / "runs")["tiny-a"]["bench"]["results"]
    assert [(r["batch_size"], r["oom"]) for r in results] == [(2, False), (100000, True), (4, False)]
    assert "GiB of host memory is free" in results[1]["reasons"]["images_per_s"]
