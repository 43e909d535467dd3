"""TF-IDF + logistic regression baseline, scored on the same split as the model.

Character n-grams of the message, plus a separate TF-IDF of its context, so the
baseline sees what the model sees. Trait thresholds are tuned on dev the same way.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import hstack
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from kefu_router.labels import CUSTOMER_TYPE, EMOTION, INTENT
from kefu_router.training.data import Example, label_arrays
from kefu_router.training.metrics import tune_thresholds


def _context_text(ex: Example, turns: int = 2) -> str:
    return " ".join(text for _, text in ex.context[-turns:])


class TfidfBaseline:
    def __init__(self, seed: int = 13):
        self.message_vec = TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 3), min_df=1, sublinear_tf=True)
        self.context_vec = TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 2), min_df=2, sublinear_tf=True)
        self.seed = seed

    def _features(self, examples: list[Example], fit: bool = False):
        texts, contexts = [ex.text for ex in examples], [_context_text(ex) or "<none>" for ex in examples]
        if fit:
            return hstack([self.message_vec.fit_transform(texts), 0.5 * self.context_vec.fit_transform(contexts)]).tocsr()
        return hstack([self.message_vec.transform(texts), 0.5 * self.context_vec.transform(contexts)]).tocsr()

    def fit(self, train: list[Example]) -> "TfidfBaseline":
        X, y = self._features(train, fit=True), label_arrays(train)
        lr = dict(max_iter=2000, class_weight="balanced", random_state=self.seed)
        self.heads = {h.name: LogisticRegression(**lr).fit(X, y[h.name]) for h in (EMOTION, INTENT)}
        # One binary model per trait; a trait absent from train predicts 0.
        self.traits = [
            LogisticRegression(**lr).fit(X, y[CUSTOMER_TYPE.name][:, j]) if 0 < y[CUSTOMER_TYPE.name][:, j].sum() < len(train) else None
            for j in range(CUSTOMER_TYPE.size)
        ]
        return self

    def probabilities(self, examples: list[Example]) -> dict[str, np.ndarray]:
        X = self._features(examples)
        out = {}
        for head in (EMOTION, INTENT):
            clf = self.heads[head.name]
            probs = np.zeros((len(examples), head.size))
            probs[:, clf.classes_] = clf.predict_proba(X)  # classes missing from train keep probability 0
            out[head.name] = probs
        out[CUSTOMER_TYPE.name] = np.column_stack(
            [clf.predict_proba(X)[:, 1] if clf is not None else np.zeros(len(examples)) for clf in self.traits]
        )
        return out


    def dev_thresholds(self, dev: list[Example]) -> dict[str, float]:
        """Per-trait thresholds tuned on `dev`, the way `train` tunes the model's."""
        return tune_thresholds(label_arrays(dev)[CUSTOMER_TYPE.name], self.probabilities(dev)[CUSTOMER_TYPE.name])

