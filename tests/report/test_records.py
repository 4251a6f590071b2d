"""Run records: fresh folders, atomic never-overwritten files, reading back, environment, rescore."""
import json
import re

import numpy as np
import pytest
from fake_records import eval_record, problem

from harness import __version__, records
from harness.cli import main
from harness.errors import UserError
from harness.records import machine


def test_new_run_dir_is_fresh_every_time(tmp_path):
    a = records.new_run_dir(tmp_path, "q2l-r101-448")
    b = records.new_run_dir(tmp_path, "q2l-r101-448")
    assert a != b and a.is_dir() and b.is_dir() and a.parent == tmp_path / "q2l-r101-448"
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{4}", a.name)
    with pytest.raises(UserError):
        records.new_run_dir(tmp_path, "../escape")


def test_arrays_and_record_are_written_once(tmp_path):
    run_dir = records.new_run_dir(tmp_path, "m")
    scores, labels = problem()
    record = eval_record(run_dir, scores, labels)
    assert np.load(run_dir / "scores.npy").dtype == np.float32
    assert np.load(run_dir / "labels.npy").dtype == np.uint8
    assert np.load(run_dir / "image_ids.npy").dtype == np.int64
    with pytest.raises(FileExistsError):
        records.save_arrays(run_dir, scores, labels, np.arange(len(scores)))
    path = records.write_record(run_dir, record)
    assert json.loads(path.read_text()) == json.loads(json.dumps(record))
    assert records.read_record(run_dir).metrics["mAP"] == record["metrics"]["mAP"]
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        records.write_record(run_dir, {**record, "smoke": True})
    assert path.read_bytes() == before
    assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")]


def test_bad_records_are_refused(tmp_path):
    run_dir = records.new_run_dir(tmp_path, "m")
    scores, labels = problem()
    record = eval_record(run_dir, scores, labels)
    for broken, message in (({k: v for k, v in record.items() if k != "metrics"}, "metrics"),
                            ({**record, "kind": "nonsense"}, "kind"),
                            ({**record, "schema": 3}, "schema")):
        with pytest.raises(ValueError, match=message):
            records.write_record(run_dir, broken)
    with pytest.raises(ValueError):  # NaN is not JSON
        records.write_record(run_dir, {**record, "timings": {"wall_s": float("nan")}})
    assert not (run_dir / "record.json").exists()
    with pytest.raises(ValueError, match="shapes"):
        records.save_arrays(records.new_run_dir(tmp_path, "m"), scores, labels[:5], np.arange(len(scores)))


def test_iter_records_skips_unfinished_and_reports_damaged(tmp_path):
    scores, labels = problem()
    good = records.new_run_dir(tmp_path, "m")
    records.write_record(good, eval_record(good, scores, labels))
    records.new_run_dir(tmp_path, "m")  # unfinished: no record.json
    damaged = records.new_run_dir(tmp_path, "other")
    (damaged / "record.json").write_text("{ not json")
    problems = []
    found = list(records.iter_records(tmp_path, on_problem=problems.append))
    assert [d for d, _ in found] == [good]
    assert len(problems) == 1 and str(damaged) in problems[0]
    assert list(records.iter_records(tmp_path / "nothing-here")) == []
    with pytest.raises(UserError, match="no record.json"):
        records.read_record(records.new_run_dir(tmp_path, "m"))


def test_environment_fields():
    env = records.environment()
    for key in ("python", "torch", "torchvision", "timm", "numpy", "cuda", "cudnn", "gpu", "cpu", "platform",
                "harness", "git_commit", "git_dirty", "matches_environment_file"):
        assert key in env
    assert env["harness"] == __version__ and env["numpy"] == np.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+", env["python"])
    assert env["git_commit"] is None or re.fullmatch(r"[0-9a-f]{40}", env["git_commit"])
    assert env["git_dirty"] in (None, True, False)
    json.dumps(env)


def test_environment_names_torchs_gpu_by_uuid_and_a_commit_without_git(monkeypatch):
    import types

    import pynvml

    handles = {"GPU-bbb": "second"}  # torch's device 0 is NVML's index 1 (CUDA_VISIBLE_DEVICES=1)
    monkeypatch.setattr(pynvml, "nvmlInit", lambda: None)
    monkeypatch.setattr(pynvml, "nvmlShutdown", lambda: None)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetHandleByUUID", lambda u: handles[u])
    monkeypatch.setattr(pynvml, "nvmlDeviceGetHandleByIndex", lambda i: "first")
    monkeypatch.setattr(pynvml, "nvmlDeviceGetName", lambda h: f"{h} gpu")
    monkeypatch.setattr(pynvml, "nvmlDeviceGetUUID", lambda h: "GPU-bbb")
    monkeypatch.setattr(pynvml, "nvmlSystemGetDriverVersion", lambda: "580.1")
    monkeypatch.setattr(pynvml, "nvmlDeviceGetMemoryInfo", lambda h: types.SimpleNamespace(total=80 * 2**30))
    cuda = types.SimpleNamespace(is_available=lambda: True,
                                 get_device_properties=lambda i: types.SimpleNamespace(uuid="bbb"))
    gpu = machine._gpu(types.SimpleNamespace(cuda=cuda), 0)
    assert gpu == {"name": "second gpu", "driver": "580.1", "uuid": "GPU-bbb", "memory_total_mib": 80 * 1024}

    monkeypatch.setattr(machine, "_git", lambda *args: None)  # a copy of the tree without .git
    monkeypatch.setenv("HARNESS_GIT_COMMIT", "f" * 40)
    env = records.environment()
    assert env["git_commit"] == "f" * 40 and env["git_dirty"] is None


def test_matching_environment_file(tmp_path):
    (tmp_path / "a-cu118.txt").write_text("python 3.10\ntorch==2.0.1\n")
    (tmp_path / "b-cu121.yml").write_text("dependencies:\n  - python=3.11\n  - pip:\n    - torch==2.5.1\n")
    assert records.matching_environment_file("3.11.7", "2.5.1+cu121", tmp_path) == "environments/b-cu121.yml"
    assert records.matching_environment_file("3.10.2", "2.0.1", tmp_path) == "environments/a-cu118.txt"
    assert records.matching_environment_file("3.11.7", "2.5.10", tmp_path) is None
    assert records.matching_environment_file("3.11.7", "2.5.1", tmp_path / "missing") is None


def test_rescore_recomputes_and_never_touches_the_record(tmp_path, capsys):
    scores, labels = problem(200, 6, seed=3)
    run_dir = records.new_run_dir(tmp_path, "q2l-r101-448")
    records.write_record(run_dir, eval_record(run_dir, scores, labels, n_boot=100))
    before = (run_dir / "record.json").read_bytes()
    assert main(["rescore", str(run_dir), "--n-boot", "100"]) == 0
    out = json.loads(capsys.readouterr().out)
    recorded = json.loads(before)["metrics"]
    assert out["mAP"] == recorded["mAP"] and out["mAP_ci95"] == recorded["mAP_ci95"]
    assert out["class_names"] == recorded["class_names"]
    saved = json.loads((run_dir / "rescore-q2l.json").read_text())
    assert saved["metrics"]["mAP"] == out["mAP"] and saved["recorded_mAP"] == recorded["mAP"]

    assert main(["rescore", str(run_dir), "--protocol", "asl", "--no-ci"]) == 0
    asl = json.loads(capsys.readouterr().out)
    assert asl["protocol"] == "asl" and asl["mAP_ci95"] is None and asl["mAP"] != out["mAP"]
    assert main(["rescore", str(run_dir), "--no-ci"]) == 0  # again: a second file, the first kept
    capsys.readouterr()
    assert len(list(run_dir.glob("rescore-q2l*.json"))) == 2
    assert json.loads((run_dir / "rescore-q2l.json").read_text())["metrics"]["mAP_ci95"] is not None
    assert (run_dir / "record.json").read_bytes() == before

    assert main(["rescore", str(tmp_path)]) == 2
    assert "record.json" in capsys.readouterr().err


@pytest.mark.parametrize("text", ["[" * 100000 + "]" * 100000, "1" + "0" * 5000])
def test_a_record_too_deep_or_with_a_huge_number_is_one_line(tmp_path, text):
    run_dir = records.new_run_dir(tmp_path, "m")
    (run_dir / "record.json").write_text(text)
    with pytest.raises(UserError, match="not valid JSON"):
        records.read_record(run_dir)
    problems = []
    assert list(records.iter_records(tmp_path, on_problem=problems.append)) == [] and len(problems) == 1


@pytest.mark.parametrize("section, key, value", [
    ("files", "scores", 5), ("files", "labels", None), ("eval", "protocol", 3), ("eval", "f1", ["asl"]),
    ("eval", "threshold", "high"), ("timings", "images_per_s", "fast"), ("measurement", "peak_vram_mib", "lots"),
    ("environment", "gpu", "H100"), ("dataset", "fingerprint", "abc"), ("metrics", "threshold", "x"),
    ("metrics", "protocol", 5), ("metrics", "f1_rule", [1]),
])
def test_a_field_readers_use_of_the_wrong_type_is_refused_by_name(tmp_path, section, key, value):
    run_dir = records.new_run_dir(tmp_path, "m")
    record = eval_record(run_dir, *problem())
    record[section] = {**record[section], key: value}
    (run_dir / "record.json").write_text(json.dumps(record))
    with pytest.raises(UserError, match=f"{section} '{key}'"):
        records.read_record(run_dir)


def test_a_record_read_and_written_again_keeps_every_key(tmp_path):
    run_dir = records.new_run_dir(tmp_path, "m")
    record = {**eval_record(run_dir, *problem()), "from_a_newer_harness": {"x": [1, 2]}, "note": "kept"}
    record["eval"]["a_new_field"] = None
    (run_dir / "record.json").write_text(json.dumps(record))
    again = records.new_run_dir(tmp_path, "m")
    records.write_record(again, records.read_record(run_dir))
    assert json.loads((again / "record.json").read_text()) == record


@pytest.mark.parametrize("flags, problem_named", [(["--n-boot", "0"], "--n-boot"), (["--n-boot", "-5"], "--n-boot"),
                                                  (["--seed", "-1"], "--seed")])
def test_rescore_with_a_bootstrap_it_cannot_draw_is_one_line(tmp_path, capsys, flags, problem_named):
    run_dir = records.new_run_dir(tmp_path, "q2l-r101-448")
    records.write_record(run_dir, eval_record(run_dir, *problem(), n_boot=10))
    capsys.readouterr()
    assert main(["rescore", str(run_dir), *flags]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"error: {problem_named}" in err
    assert not list(run_dir.glob("rescore-*"))


def bench_record(run_dir):
    return {"schema": 1, "kind": "bench", "run_id": run_dir.name, "model": {"id": "m"}, "started_at": None,
            "finished_at": None, "smoke": False,
            "bench": {"resolution": 224, "params": 10, "gflops": 1.5, "device": {"name": "cpu"}, "options": {"amp": False},
                      "results": [{"batch_size": 1, "images_per_s": 10.0, "peak_vram_mib": None, "memory_check": None}]}}


@pytest.mark.parametrize("where, key, value", [
    ("bench", "device", "gpu"), ("bench", "options", [1]), ("bench", "gflops", "many"), ("bench", "fits", "x"),
    ("result", "images_per_s", "fast"), ("result", "peak_vram_mib", "x"), ("result", "memory_check", "x"),
])
def test_a_bench_field_the_report_uses_of_the_wrong_type_is_refused_by_name(tmp_path, where, key, value):
    run_dir = records.new_run_dir(tmp_path, "m")
    record = bench_record(run_dir)
    (record["bench"] if where == "bench" else record["bench"]["results"][0])[key] = value
    (run_dir / "record.json").write_text(json.dumps(record))
    with pytest.raises(UserError, match=f"bench {'results ' if where == 'result' else ''}'{key}'"):
        records.read_record(run_dir)
    (run_dir / "record.json").unlink()
    records.write_record(run_dir, bench_record(run_dir))  # the sound one reads
    assert records.read_record(run_dir).bench["gflops"] == 1.5


def test_smoke_reasons_must_be_text(tmp_path):
    run_dir = records.new_run_dir(tmp_path, "m")
    (run_dir / "record.json").write_text(json.dumps({**eval_record(run_dir, *problem()), "smoke_reasons": [1, None]}))
    with pytest.raises(UserError, match="'smoke_reasons' a list of text"):
        records.read_record(run_dir)


def test_config_section_holds_every_field_with_paths_as_text(tmp_path):
    from dataclasses import fields

    from harness.eval.config import EvalConfig
    from harness.measure.bench import BenchConfig

    config = EvalConfig(coco_root=tmp_path / "coco", runs_root=tmp_path / "runs", batch_size=3, seed=7)
    section = records.config_section(config)
    assert set(section) == {f.name for f in fields(EvalConfig)}
    assert section["coco_root"] == str(tmp_path / "coco") and section["runs_root"] == str(tmp_path / "runs")
    assert (section["batch_size"], section["seed"]) == (3, 7)
    json.dumps(section)  # JSON as it is
    assert records.config_section(BenchConfig(batch_sizes=(1, 4)))["batch_sizes"] == (1, 4)
