"""main_worker()'s bookkeeping: best = the higher of the regular and EMA mAP; early stop 8 epochs past
both bests while the latest EMA mAP is below its best."""
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
