"""Messages about models name the real model and the real cause."""
import os

import pytest

from harness.cli import main


def test_attention_on_an_asl_model_names_that_model(tmp_path, capsys):
    image = tmp_path / "x.jpg"
    image.write_bytes(b"")
    assert main(["attention", "asl-tresnetm-224", str(image), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "TResNet-M" in err and "TResNet-L" not in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("kind, says", [("folder", "is a folder; pass the checkpoint file in it"),
                                        ("fifo", "is a FIFO (named pipe), not a file"), ("missing", "no such file")])
def test_eval_weights_that_are_not_a_file_say_what_they_are(smoke_root, tmp_path, capsys, kind, says):
    weights = tmp_path / "weights"
    if kind == "folder":
        weights.mkdir()
    elif kind == "fifo":
        os.mkfifo(weights)
    code = main(["eval", "q2l-r101-448", "--coco-root", str(smoke_root), "--weights", str(weights),
                 "--out", str(tmp_path / "runs"), "--workers", "0", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and says in err and len(err.splitlines()) == 1
    if kind == "folder":
        assert f"--weights-dir {weights}" in err
