"""Messages about models name the real model and the real cause."""
import os
import subprocess
import sys

import pytest
from paths import REPO

from harness.cli import main
from harness.download import fetch
from harness.errors import UserError
from harness.manifest import DEFAULT_MANIFEST, get_spec, load_manifest, resolve_id
from harness.pretrained import check_weights_file


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


def test_models_into_a_closed_pipe_is_no_network_error(tmp_path):
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader (`| head`) has gone before a byte is written
    done = subprocess.run([sys.executable, "-m", "harness", "models"], stdout=write_end, stderr=subprocess.PIPE,
                          text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    os.close(write_end)
    assert done.returncode == 141 and done.stderr == ""


def test_an_empty_name_is_no_model_and_names_are_unambiguous(tmp_path):
    specs = load_manifest(DEFAULT_MANIFEST)
    assert resolve_id("", specs) is None  # it matched the first entry without a release folder
    path = tmp_path / "m.yaml"
    path.write_text(DEFAULT_MANIFEST.read_text().replace("\n  q2l-r101-576:\n    family", "\n  Q2L-R101-448:\n    family"))
    with pytest.raises(UserError, match="both answer to the name 'q2l-r101-448'"):
        load_manifest(path)


def test_weights_dir_that_is_not_a_folder_and_a_folder_in_place_of_a_file_are_said(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HARNESS_OFFLINE", "1")
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "home"))
    spec = get_spec("asl-tresnetm-224")
    with pytest.raises(UserError, match="--weights-dir .* is a file; pass the folder"):
        fetch(spec, "checkpoint", weights_dir=REPO / "README.md")
    placed = tmp_path / "w" / spec.id / spec.files["checkpoint"].filename
    placed.mkdir(parents=True)
    with pytest.raises(UserError, match="not on this machine"):
        fetch(spec, "checkpoint", weights_dir=tmp_path / "w")
    assert f"ignoring {placed}: it is a folder" in "".join(capsys.readouterr())


def test_weights_that_are_a_link_loop_say_so(tmp_path):
    loop = tmp_path / "loop.pth"
    loop.symlink_to(loop)
    with pytest.raises(UserError, match="is a loop of symbolic links, not a file"):
        check_weights_file(loop)
