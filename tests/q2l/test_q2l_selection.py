"""main_worker()'s bookkeeping: best = the higher of the regular and EMA mAP; early stop 8 epochs past
both bests while the latest EMA mAP is below its best."""
import json

import pytest
from paths import FIXTURES

from harness.q2l.train import Selection


def _run(pairs):
    s, out = Selection(), []
    for epoch, (regular, ema) in enumerate(pairs):
        out.append((s.update(epoch, regular, ema), s.best_model, s.early_stop(epoch)))
    return s, out


def test_best_is_the_higher_of_the_two_models():
    s, out = _run([(50, 40), (55, 60), (58, 59)])
    assert [o[:2] for o in out] == [(True, "regular"), (True, "ema"), (False, "ema")]
    assert (s.best_mAP, s.best_epoch, s.best_regular_epoch, s.best_ema_mAP) == (60, 1, 2, 60)


def test_a_tie_keeps_the_earlier_epoch_and_the_regular_model():
    s, out = _run([(50, 50), (50, 49)])
    assert out[0][:2] == (True, "regular") and not out[1][0] and s.best_epoch == 0


def test_early_stop_needs_both_bests_eight_epochs_back_and_ema_below_its_best():
    pairs = [(70, 71), (72, 73)] + [(60, 60)] * 12
    _, out = _run(pairs)
    stops = [e for e, o in enumerate(out) if o[2]]
    assert stops[0] == 10  # epoch 10 - max(best 1, best regular 1) = 9 > 8
    _, out = _run([(70, 71), (72, 73)] + [(60, 60)] * 7 + [(80, 60)] + [(60, 60)] * 9)
    assert [e for e, o in enumerate(out) if o[2]][0] == 18  # the regular best at epoch 9 postpones it
    _, out = _run([(70, 71), (72, 73)] + [(60, 73)] * 12)  # the EMA holds its best: never
    assert not any(o[2] for o in out)


AUTHORS = json.loads((FIXTURES / "q2l_authors" / "selection.json").read_text())


@pytest.mark.parametrize("case", AUTHORS["cases"], ids=lambda c: f"{len(c['pairs'])}-epochs")
def test_best_and_early_stop_equal_their_main_worker_lines(case):
    """Their main_mlc.py lines, run on the same mAP sequences (fixture by make_selection.py): after every
    epoch the same is_best, best epoch and mAP, best regular epoch, best EMA mAP, saved model; the same stop."""
    s, stopped = Selection(), None
    for epoch, (regular, ema) in enumerate(case["pairs"]):
        is_best = s.update(epoch, float(regular), float(ema))
        ours = [is_best, s.best_epoch, s.best_mAP, s.best_regular_epoch, s.best_ema_mAP]
        assert ours == case["after"][epoch][:5], epoch
        if is_best:
            assert s.best_model == case["after"][epoch][5]
        if s.early_stop(epoch):
            stopped = epoch
            break
    assert stopped == case["stopped"]
