"""Issue 18: a report at ImageNet's class count (1,000) and a tagging vocabulary's (10,000), in the time and the
size it takes at 20 classes: metrics.json compact and its confusion matrices sparse above 100 classes, the
numbers still exact against torch and scikit-learn."""
from __future__ import annotations

import json

import numpy as np
import scipy.sparse
from sklearn.metrics import confusion_matrix

from postmortem.analyze.metrics import ConfusionCounts
from postmortem.render.metrics_json import INDENT_BELOW_BYTES, SPARSE_CONFUSION_ABOVE, confusion_entry, metrics_bytes


def test_metrics_json_is_indented_while_small_and_compact_above():
    small = {"schema_version": 1, "epochs": [{"loss": 0.5, "per_class": {"a": {"support": 3}}}]}
    assert metrics_bytes(small) == json.dumps(small, indent=1).encode()
    large = {"schema_version": 1, "values": list(range(INDENT_BELOW_BYTES // 4))}
    written = metrics_bytes(large)
    assert b"\n" not in written and json.loads(written) == large
    assert len(written) < len(json.dumps(large, indent=1))


def test_confusion_matrix_is_dense_up_to_100_classes_and_its_nonzero_cells_above():
    rng = np.random.default_rng(0)
    for n_classes in (3, SPARSE_CONFUSION_ABOVE, SPARSE_CONFUSION_ABOVE + 1, 1000):
        labels, pred = rng.integers(0, n_classes, 500), rng.integers(0, n_classes, 500)
        expected = confusion_matrix(labels, pred, labels=list(range(n_classes)))
        entry = json.loads(json.dumps(confusion_entry(ConfusionCounts.of(labels, pred, n_classes))))
        if n_classes <= SPARSE_CONFUSION_ABOVE:
            assert entry == {"confusion_matrix": expected.tolist()}
            continue
        cells = entry["confusion_matrix_sparse"]
        assert set(entry) == {"confusion_matrix_sparse"} and cells["shape"] == [n_classes, n_classes]
        assert len(cells["counts"]) == np.count_nonzero(expected) and min(cells["counts"]) > 0
        assert sorted(zip(cells["rows"], cells["columns"])) == list(zip(cells["rows"], cells["columns"]))
        rebuilt = scipy.sparse.coo_matrix((cells["counts"], (cells["rows"], cells["columns"])), cells["shape"])
        np.testing.assert_array_equal(rebuilt.toarray(), expected)
