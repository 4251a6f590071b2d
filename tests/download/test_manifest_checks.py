"""Every manifest field is checked when the manifest is read, before any model is built: one line
naming the manifest, the entry, the field and the fix (exit 2)."""
import inspect

import pytest

from harness.architectures import ARCHITECTURES
from harness.cli import main
from harness.errors import UserError
from harness.inputs.yaml_files import dump_yaml, read_yaml
from harness.manifest import DEFAULT_MANIFEST, MLSPL_LOSSES, load_manifest
from harness.mlspl.losses import LOSSES
from harness.models import _BUILDERS, build_from_arch, register_model, registered_architectures


def _broken(tmp_path, mutate):
    data = read_yaml(DEFAULT_MANIFEST.read_text())
    mutate(data)
    path = tmp_path / "m.yaml"
    path.write_text(dump_yaml(data))
    return path


def _set(model, section, **values):
    return lambda d: d["models"][model][section].update(values)


CASES = [  # (mutation, entry, field, what the line says)
    (_set("q2l-r101-448", "arch", img_sise=448), "q2l-r101-448", "arch.img_sise", "did you mean 'img_size'"),
    (_set("asl-tresnetl-448", "arch", num_classes=3), "asl-tresnetl-448", "arch.num_classes", "must be 80"),
    (_set("ctran-r101-576", "arch", num_labels=81), "ctran-r101-576", "arch.num_labels", "must be 80"),
    (_set("asl-tresnetm-224", "eval", resolution=100000), "asl-tresnetm-224", "eval.resolution", "at most 2,048"),
    (_set("asl-tresnetm-224", "eval", resolution=0), "asl-tresnetm-224", "eval.resolution", "positive integer"),
    (_set("asl-tresnetm-224", "arch", img_size=8), "asl-tresnetm-224", "arch.img_size", "from 32 to 2,048"),
    (_set("q2l-r101-448", "arch", img_size=100000), "q2l-r101-448", "arch.img_size", "from 32 to 2,048"),
    (_set("q2l-r101-448", "arch", img_size=576), "q2l-r101-448", "arch.img_size", "make them equal"),
    (_set("q2l-r101-448", "arch", backbone="resnet50"), "q2l-r101-448", "arch.backbone", "must be one of"),
    (_set("q2l-r101-448", "arch", nheads=5), "q2l-r101-448", "arch.nheads", "must divide"),
    (_set("q2l-r101-448", "eval", batch_size=10**9), "q2l-r101-448", "eval.batch_size", "at most 4,096"),
    (_set("q2l-r101-448", "eval", presicion="fp16-fused"), "q2l-r101-448", "eval.presicion", "did you mean 'precision'"),
    (lambda d: d["models"]["q2l-r101-448"].update(relesed=True), "q2l-r101-448", "relesed", "did you mean 'released'"),
    (lambda d: d["models"]["asl-tresnetl-448"].update(train={"loss": "AN"}), "asl-tresnetl-448", "train", "not read"),
    (_set("q2l-r101-448", "paper", metrics={"mAP": 1000}), "q2l-r101-448", "paper.metrics.mAP", "from 0 to 100"),
    (_set("q2l-r101-448", "paper", metrics={"mAP": float("nan")}), "q2l-r101-448", "paper.metrics.mAP", "from 0 to 100"),
    (_set("q2l-r101-448", "paper", metrics={"mAP": float("inf")}), "q2l-r101-448", "paper.metrics.mAP", "from 0 to 100"),
    (lambda d: d["models"]["q2l-r101-448"]["files"]["checkpoint"].update(filename="../../x.pth"), "q2l-r101-448",
     "files.checkpoint.filename", "plain file name"),
    (lambda d: d["models"]["q2l-r101-448"]["files"]["checkpoint"].update(filename="/etc/passwd"), "q2l-r101-448",
     "files.checkpoint.filename", "plain file name"),
    (lambda d: d["models"]["q2l-r101-448"]["files"]["checkpoint"]["sources"][1].update(url="file:///etc/passwd"),
     "q2l-r101-448", "files.checkpoint.sources[1].url", "http:// or https://"),
    (lambda d: d["models"]["q2l-r101-448"]["files"]["checkpoint"]["sources"][0].update(folder_id="../x y"),
     "q2l-r101-448", "files.checkpoint.sources[0].folder_id", "Google Drive id"),
    (lambda d: d["models"]["q2l-r101-448"]["files"].update(confg=d["models"]["q2l-r101-448"]["files"]["config"]),
     "q2l-r101-448", "files.confg", "did you mean 'config'"),
    (lambda d: d["reference_files"]["q2l-val-labels"].update(filename="..\\labels.npy"), "q2l-val-labels",
     "files.file.filename", "plain file name"),
    (_set("mlspl-an-linear", "train", loss="an"), "mlspl-an-linear", "train.loss", "must be one of"),
    (_set("ctran-r101-576", "train", known=True), "ctran-r101-576", "train.known", "0, 25, 50 or 75"),
]


@pytest.mark.parametrize("mutate, entry, field, says", CASES)
def test_a_bad_field_is_one_line_naming_manifest_entry_and_field(tmp_path, mutate, entry, field, says):
    path = _broken(tmp_path, mutate)
    with pytest.raises(UserError) as err:
        load_manifest(path)
    line = str(err.value)
    assert line.startswith(f"{path}: entry '{entry}': field '{field}' ") and says in line and "\n" not in line


@pytest.mark.parametrize("mutate, says", [
    (lambda d: d["models"].update({12345: d["models"].pop("q2l-r101-448")}), "model id 12345 must be a word"),
    (lambda d: d["models"].update({"../evil": d["models"].pop("q2l-r101-448")}), "model id '../evil' must be a word"),
    (lambda d: d.update(models={}), "'models:' holds no model"),
    (lambda d: d.update(schema=99), "schema 99 is not one this harness reads"),
    (lambda d: d.update(modles={}), "did you mean 'models'"),
])
def test_a_bad_manifest_layout_is_one_line(tmp_path, mutate, says):
    with pytest.raises(UserError, match=says):
        load_manifest(_broken(tmp_path, mutate))


def test_the_cli_says_it_in_one_line_with_exit_2_and_prints_nothing(tmp_path, capsys):
    path = _broken(tmp_path, _set("q2l-r101-448", "arch", img_sise=448))
    assert main(["models", "--manifest", str(path), "--format", "json"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1 and "img_sise" in err


def test_a_keyword_a_registered_builder_does_not_take_is_one_line_before_building():
    @register_model
    def strict_test_net(num_classes):  # pragma: no cover - never built
        raise AssertionError("built")
    try:
        with pytest.raises(UserError, match="architecture 'strict_test_net': got an unexpected keyword argument "
                                            "'widht'; its keywords are num_classes"):
            build_from_arch({"name": "strict_test_net", "num_classes": 80, "widht": 4})
        with pytest.raises(UserError, match="did you mean 'ml_decoder'"):
            build_from_arch({"name": "ml_decodr", "num_classes": 80})
    finally:
        _BUILDERS.pop("strict_test_net")


def test_the_keyword_table_is_the_builders_signatures():
    registered_architectures()
    for name, (checks, _required) in ARCHITECTURES.items():
        params = inspect.signature(_BUILDERS[name]).parameters
        named = {p for p, v in params.items() if v.kind is not inspect.Parameter.VAR_KEYWORD}
        assert named <= set(checks), name  # every named keyword is checked; the rest go through **sizes
        required = {p for p, v in params.items() if v.default is inspect.Parameter.empty
                    and v.kind is not inspect.Parameter.VAR_KEYWORD}
        assert required == _required, name
    assert set(MLSPL_LOSSES) == set(LOSSES)


def test_the_shipped_manifest_passes_every_check():
    assert len(load_manifest(DEFAULT_MANIFEST)) >= 30
