"""`harness verify RUN...` on run folders made by `harness eval`: a verdict per run, one line per finding,
exit 0 only when every check holds, 1 when one fails, 3 when some cannot be made, 2 on bad input."""
import json
import shutil

import pytest
from conftest import tiny_manifest
from torch import nn

from harness.cli import main
from harness.models import register_model

pytestmark = pytest.mark.usefixtures("no_lock_entries")


@register_model
def tiny_verify_net(num_classes=80, **_):
    return nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(3 * 2 * 2, num_classes))


@pytest.fixture()
def manifest(tmp_path):
    return tiny_manifest(tmp_path, "tiny-verify", {"name": "tiny_verify_net", "num_classes": 80}, resolution=32,
                         batch_size=4)


def evaluate(manifest, smoke_root, runs, *extra):
    """An honest run: `harness eval` on the smoke subset with random weights."""
    assert main(["eval", "tiny-verify", "--manifest", str(manifest), "--coco-root", str(smoke_root), "--weights",
                 "random", "--runs", str(runs), "--workers", "0", "--no-progress", "-q", *extra]) == 0
    return next((runs / "tiny-verify").iterdir())


def edit_record(run_dir, change):
    data = json.loads((run_dir / "record.json").read_text())
    change(data)
    (run_dir / "record.json").write_text(json.dumps(data))


def verify(manifest, *args):
    return main(["verify", "--manifest", str(manifest), "--no-progress", *map(str, args)])


@pytest.fixture(scope="module")
def honest_runs(smoke_root, tmp_path_factory):
    """(manifest, runs folder holding one honest eval): made once, copied by each test that adds to it."""
    folder = tmp_path_factory.mktemp("honest")
    with pytest.MonkeyPatch.context() as patch:  # no_lock_entries, for the module
        patch.setenv("HARNESS_LOCK_FILE", str(folder / "weights_manifest.lock.yaml"))
        manifest = tiny_manifest(folder, "tiny-verify", {"name": "tiny_verify_net", "num_classes": 80},
                                 resolution=32, batch_size=4)
        evaluate(manifest, smoke_root, folder / "runs")
    return manifest, folder / "runs"


def test_an_honest_smoke_eval_holds_and_is_smoke_never_reproduced(honest_runs, capsys):
    manifest, runs = honest_runs  # only read
    run_dir = next((runs / "tiny-verify").iterdir())
    capsys.readouterr()
    assert verify(manifest, run_dir) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{run_dir}: HOLDS (tiny-verify; status in the report: smoke; smoke: 24 of the 40,504 images; " \
                     f"random weights)"
    assert len(out) > 8 and all(line.startswith("  held ") for line in out[1:])
    assert main(["report", "--manifest", str(manifest), "--runs", str(runs), "--measured", "none"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| tiny-verify"))
    assert "smoke" in row and "reproduced" not in row


@pytest.mark.usefixtures("plots_not_drawn")
def test_a_copied_4_image_smoke_record_with_flags_cleared_and_the_papers_map_fails(manifest, smoke_root, tmp_path,
                                                                                  capsys):
    run_dir = evaluate(manifest, smoke_root, tmp_path / "runs", "--limit", "4")
    copy = tmp_path / "sent" / "tiny-verify" / run_dir.name
    shutil.copytree(run_dir, copy)
    edit_record(copy, lambda r: (r.update(smoke=False, smoke_reasons=[]), r["checkpoint"].update(random_weights=False),
                                 r["eval"].update(limit=None), r["dataset"].update(smoke_subset=False),
                                 r["metrics"].update(mAP=84.9, mAP_ci95=[84.0, 86.0])))
    capsys.readouterr()
    assert verify(manifest, copy) == 1
    out = capsys.readouterr().out
    assert out.startswith(f"{copy}: FAILED (tiny-verify; status in the report: failed checks;")
    failed = [line.split(":")[0].split()[-1] for line in out.splitlines() if line.startswith("  failed ")]
    assert failed == ["mAP", "metrics", "checkpoint", "flags"]  # metrics: its CI was edited too; "smoke flags"
    for fmt in ("markdown", "csv", "latex", "json", "html"):
        assert main(["report", "--manifest", str(manifest), "--runs", str(tmp_path / "sent"), "--measured", "none",
                     "--format", fmt]) == 0
        text = capsys.readouterr().out
        if fmt == "json":
            row = next(r for r in json.loads(text)["models"] if r["model"] == "tiny-verify")
            assert row["status"] == "failed checks" and row["mAP"] == 84.9
        else:
            row = next(line for line in text.splitlines() if "tiny-verify" in line)
            assert "failed checks" in row and "reproduced" not in row and "4 of the 40,504 images" in row


def test_exit_codes_json_and_many_runs(honest_runs, tmp_path, capsys):
    manifest, runs = honest_runs[0], tmp_path / "runs"
    shutil.copytree(honest_runs[1], runs)
    honest = next((runs / "tiny-verify").iterdir())
    edited = runs / "tiny-verify" / "edited"
    shutil.copytree(honest, edited)
    edit_record(edited, lambda r: r["metrics"].update(mAP=r["metrics"]["mAP"] + 1))
    old = runs / "tiny-verify" / "schema-1"
    shutil.copytree(honest, old)
    edit_record(old, lambda r: (r.update(schema=1), r.pop("digests")))
    capsys.readouterr()
    assert verify(manifest, old) == 3  # nothing failed, but its files cannot be shown to be its own
    assert "UNVERIFIED" in capsys.readouterr().out
    assert verify(manifest, honest, old, edited, "--format", "json") == 1
    result = json.loads(capsys.readouterr().out)
    assert [r["verdict"] for r in result["runs"]] == ["holds", "unverified", "failed"]
    assert main(["verify", "--manifest", str(manifest), str(honest), str(edited)]) == 1  # with the progress bar
    assert capsys.readouterr().out.rstrip().endswith("2 runs: 1 holds, 1 failed")


def a_file(root):
    (root / "a-file").write_text("x")
    return root / "a-file"


def a_damaged_record(root):
    (root / "damaged").mkdir()
    (root / "damaged" / "record.json").write_text("{")
    return root / "damaged"


@pytest.mark.parametrize("make, message", [(lambda root: root / "missing", "does not exist"), (a_file, "is a file"),
                                           (lambda root: root, "is a runs folder, not a run folder"),
                                           (a_damaged_record, "is not valid JSON")])
def test_bad_input_is_one_line_and_exit_2(honest_runs, tmp_path, capsys, make, message):
    manifest, runs = honest_runs[0], tmp_path / "runs"
    shutil.copytree(honest_runs[1], runs)
    honest = next((runs / "tiny-verify").iterdir())
    capsys.readouterr()
    assert verify(manifest, honest, make(runs)) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.strip().splitlines()) == 1 and message in captured.err
