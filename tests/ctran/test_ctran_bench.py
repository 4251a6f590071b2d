"""`harness bench` covers C-Tran (regular inference: every label unknown), on CPU with a tiny one."""
import json
from pathlib import Path

from harness.cli import main
from harness.inputs.yaml_files import dump_yaml


def test_bench_ctran_on_cpu(tmp_path):
    entry = {"family": "ctran", "released": False,
             "arch": {"name": "ctran", "layers": 1, "blocks": [1, 1, 1, 1], "block": "basic", "img_size": 64},
             "paper": {"title": "t", "table": "T", "row": "r", "metrics": {"mAP": 85.1}},
             "train": {"use_lmt": True, "known": 0},
             "eval": {"resolution": 64, "resize": "squish", "normalize": "imagenet", "image_set": "annotated",
                      "protocol": "ctran", "batch_size": 2}}
    manifest = tmp_path / "m.yaml"
    manifest.write_text(dump_yaml({"schema": 1, "models": {"ctran-tiny": entry}}))
    assert main(["bench", "ctran-tiny", "--device", "cpu", "--manifest", str(manifest), "--out", str(tmp_path),
                 "--iters", "1", "--warmup", "0", "--batch-size", "1", "--vram-budget", "none"]) == 0
    (path,) = Path(tmp_path).glob("ctran-tiny/*/record.json")
    bench = json.loads(path.read_text())["bench"]
    assert bench["params"] > 1e6 and bench["results"][0]["images_per_s"] > 0
    assert any("every label unknown" in n for n in bench["notes"])
