"""Temperature scaling: the fit recovers a known overconfidence, the bundle carries it, Predictor applies it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kefu_router.bundle import BundleError, load_bundle
from kefu_router.labels import EMOTION, INTENT
from kefu_router.predictor import Predictor, softmax

pytest.importorskip("scipy")
from kefu_router.training.calibration import fit_temperature, nll  # noqa: E402
from kefu_router.training.data import MISSING  # noqa: E402


def overconfident(scale: float, n: int = 4000, classes: int = 4, seed: int = 0):
    """Labels drawn from softmax(z), returned with logits z * scale: the right temperature is `scale`."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, (n, classes))
    labels = np.array([rng.choice(classes, p=p) for p in softmax(z)])
    return z * scale, labels


@pytest.mark.parametrize("scale", [0.5, 1.0, 2.5])
def test_fit_recovers_the_temperature_of_scaled_logits(scale):
    logits, labels = overconfident(scale)
    t = fit_temperature(logits, labels)
    assert t == pytest.approx(scale, rel=0.1)
    assert nll(logits, labels, t) <= nll(logits, labels, 1.0)


def test_fit_ignores_unlabelled_rows_and_keeps_one_without_any():
    logits, labels = overconfident(2.0)
    noisy = np.concatenate([logits, np.full((500, 4), [9.0, 0, 0, 0])])
    assert fit_temperature(noisy, np.concatenate([labels, np.full(500, MISSING)])) == pytest.approx(2.0, rel=0.1)
    assert fit_temperature(logits[:3], np.full(3, MISSING)) == 1.0


def test_trained_run_and_its_bundle_carry_the_fitted_temperatures(trained_run, tiny_bundle):
    fitted = json.loads((trained_run / "thresholds.json").read_text())["temperature"]
    assert set(fitted) == {EMOTION.name, INTENT.name} and all(0.05 <= t <= 20 for t in fitted.values())
    assert load_bundle(tiny_bundle).temperatures == fitted


def test_predictor_divides_logits_by_the_temperature_and_keeps_the_labels(bundle_copy):
    path = bundle_copy / "thresholds.json"
    fitted = json.loads(path.read_text())
    texts = ["我买的杯子收到就是碎的", "这条裙子有L码吗", "好的谢谢", "怎么还没到 明天就要用啊"]
    path.write_text(json.dumps({**fitted, "temperature": {EMOTION.name: 1.0, INTENT.name: 1.0}}))
    plain = Predictor(bundle_copy).probabilities(texts)
    path.write_text(json.dumps({**fitted, "temperature": {EMOTION.name: 4.0, INTENT.name: 0.5}}))
    scaled = Predictor(bundle_copy).probabilities(texts)
    for head in (EMOTION.name, INTENT.name):
        assert (plain[head].argmax(1) == scaled[head].argmax(1)).all()
    logits = np.log(plain[EMOTION.name])  # softmax(log p / T) is softmax(logits / T)
    np.testing.assert_allclose(scaled[EMOTION.name], softmax(logits / 4.0), atol=1e-5)
    assert (scaled[INTENT.name].max(1) >= plain[INTENT.name].max(1) - 1e-6).all()  # T < 1 sharpens
    np.testing.assert_array_equal(scaled["customer_type"], plain["customer_type"])


@pytest.mark.parametrize("bad", [{"emotion": -1.0}, {"emotion": "2"}, {"customer_type": 2.0}, [2.0]])
def test_a_bad_temperature_is_refused_when_the_bundle_loads(bundle_copy, bad):
    path = bundle_copy / "thresholds.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "temperature": bad}))
    with pytest.raises(BundleError, match="temperature"):
        load_bundle(bundle_copy)


def test_review_threshold_flags_messages_more_likely_wrong_than_right():
    from kefu_router.training.calibration import fit_review_threshold

    confidence = np.array([0.3, 0.35, 0.4, 0.6, 0.8, 0.9])  # the emotion score; intent is sure and right
    wrong = np.array([1, 1, 0, 0, 0, 0], dtype=bool)  # the two least confident emotions are wrong (class 1, gold 0)
    rest = (1 - confidence) / 3
    emotion = np.stack([confidence, rest, rest, rest], axis=1)
    emotion[wrong] = np.stack([rest, confidence, rest, rest], axis=1)[wrong]
    probs = {"emotion": emotion, "intent": np.tile(np.eye(8)[0], (6, 1))}
    targets = {"emotion": np.zeros(6, dtype=np.int64), "intent": np.zeros(6, dtype=np.int64)}
    review = fit_review_threshold(probs, targets)
    # wrong is more likely than right only at 0.30 and 0.35: flag below just above 0.35
    assert review["below"] == pytest.approx(0.3501) and review["flag_rate"] == pytest.approx(2 / 6)
    assert review["precision"] == 1.0 and review["recall"] == 1.0
    wrong[3] = True  # a wrong message at 0.6 between right ones: isotonic pools 0.4 and 0.6 to 0.5, still flagged
    emotion[3] = [rest[3], confidence[3], rest[3], rest[3]]
    review = fit_review_threshold({"emotion": emotion, "intent": probs["intent"]}, targets)
    assert review["below"] == pytest.approx(0.6001) and review["precision"] == pytest.approx(0.75)
    assert fit_review_threshold(probs, {"emotion": np.full(6, MISSING), "intent": targets["intent"]}) is None


def test_a_bundles_fitted_review_threshold_reaches_the_router(bundle_copy):
    from kefu_router.routing import Router

    path = bundle_copy / "thresholds.json"
    fitted = json.loads(path.read_text(encoding="utf-8"))
    fitted["review"] = {"below": 0.99, "flag_rate": 0.9, "precision": 0.6, "recall": 1.0, "dev_rows": 10}
    path.write_text(json.dumps(fitted), encoding="utf-8")
    predictor = Predictor(bundle_copy)
    assert predictor.bundle.review_below == 0.99
    assert Router(review_below=predictor.bundle.review_below).review_below == 0.99
    fitted["review"]["below"] = 1.5
    path.write_text(json.dumps(fitted), encoding="utf-8")
    with pytest.raises(BundleError, match="review"):
        load_bundle(bundle_copy)
