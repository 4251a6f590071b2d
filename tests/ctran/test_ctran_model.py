"""C-Tran against the authors' CTranModel: logits (fixture made by their code) and checkpoint keys."""
import sys

import numpy as np
import pytest
import torch
from paths import FIXTURES

from harness.models.ctran import CTran

DATA = FIXTURES
sys.path.insert(0, str(FIXTURES))
from make_ctran_fixture import fill_seeded_weights  # noqa: E402  (the fill their model got)


@pytest.fixture(scope="module")
def small():
    f = np.load(DATA / "ctran_logits.npz")
    with torch.device("meta"):  # no random draw for 60 M weights that fill_seeded_weights overwrites (0.4 s)
        model = CTran(num_labels=80, layers=int(f["layers"]), blocks=tuple(f["blocks"])).eval()
    model.to_empty(device="cpu")
    for counter in (b for b in model.buffers() if not b.is_floating_point()):
        counter.zero_()  # BatchNorm's num_batches_tracked, as a fresh model holds it
    fill_seeded_weights(model, int(f["seed"]))  # in place, every float entry: as load_state_dict(strict=True) would
    return model, f


def test_logits_equal_the_authors_model(small):
    model, f = small
    images, masks = torch.from_numpy(f["images"]), torch.from_numpy(f["masks"])
    with torch.no_grad():
        lmt = model(images, masks).numpy()
        model.use_lmt = False
        no_lmt = model(images, masks).numpy()
        model.use_lmt = True
    theirs = f["logits_lmt"]
    assert np.abs(theirs).max() > 0.1 and np.std(theirs) > 0.01  # not a degenerate fixture
    assert np.abs(lmt - theirs).max() <= 1e-5 * max(1.0, np.abs(theirs).max())
    assert np.abs(no_lmt - f["logits_no_lmt"]).max() <= 1e-5 * max(1.0, np.abs(theirs).max())
    assert np.abs(lmt - no_lmt).max() > 1e-3  # the state embeddings do change the logits


def test_state_dict_keys_and_shapes_are_theirs():
    with torch.device("meta"):
        model = CTran()
    ours = [f"{k}\t{'x'.join(map(str, v.shape))}" for k, v in model.state_dict().items()]
    assert ours == (DATA / "ctran_keys.tsv").read_text().split("\n")[:-1]


def test_unknown_state_is_not_zero_and_gets_no_gradient():
    model = CTran(num_labels=4, layers=1, blocks=(1, 1, 1, 1), block="basic")
    assert model.known_label_lt.weight[0].abs().sum() > 0  # their weights_init overwrites the padding row
    x = model(torch.randn(2, 3, 64, 64), torch.tensor([[-1.0, 0, 1, -1], [1, 1, 0, -1]]))
    x.sum().backward()
    assert model.known_label_lt.weight.grad[0].abs().sum() == 0
    assert model.known_label_lt.weight.grad[1:].abs().sum() > 0


@pytest.mark.parametrize("mask, words", [(torch.zeros(2, 5), "shape (2, 5)"),
                                         (torch.full((2, 4), 0.5), "holds 0.5")])
def test_bad_mask_is_named(mask, words):
    model = CTran(num_labels=4, layers=1, blocks=(1, 1, 1, 1), block="basic")
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
        model(torch.randn(2, 3, 64, 64), mask)


def test_their_best_model_pt_loads_strictly(tmp_path):
    """Their logger saves {'epoch', 'state_dict', 'valid_mAP' (numpy), ...}; DataParallel adds `module.`."""
    from harness.ctran import checkpoint as ckpt
    model = CTran(num_labels=4, layers=1, blocks=(1, 1, 1, 1), block="basic")
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    torch.save({"epoch": 3, "state_dict": state, "valid_mAP": np.float64(0.5), "test_mAP": np.float64(0.5),
                "valid_loss": 1.0, "test_loss": 1.0}, tmp_path / "best_model.pt")
    read, arch, _ = ckpt.read(tmp_path / "best_model.pt")
    other = CTran(num_labels=4, layers=1, blocks=(1, 1, 1, 1), block="basic")
    ckpt.load_into(other, read, tmp_path / "best_model.pt")
    assert arch is None and all(torch.equal(other.state_dict()[k], v) for k, v in model.state_dict().items())
