"""A fixed feature extractor and a linear head on a synthetic ultrasound-like set.

Fits ``Pipeline([ConvFeatureTransformer(), LogisticRegression()])`` on 90 synthetic
images (normal / benign / malignant) and saves the test confusion matrix as
``feature_pipeline_confusion.png``.
"""

import os

from sklearn.linear_model import LogisticRegression
from sklearn.metrics import confusion_matrix
from sklearn.pipeline import Pipeline

from skconv import ConvFeatureTransformer
from skconv.datasets import make_ultrasound
from skconv.model_selection import split_report, train_val_test_split
from skconv.report import plot_confusion_matrix

out = os.environ.get("SKCONV_EXAMPLES_OUT", ".")
X, y = make_ultrasound(n_per_class=30, image_size=96, random_state=0)
X_tr, X_va, X_te, y_tr, y_va, y_te = train_val_test_split(X, y, stratify=y, random_state=0)
split_report(y_tr, y_va, y_te)

clf = Pipeline(
    [("features", ConvFeatureTransformer()), ("head", LogisticRegression(max_iter=2000))]
)
clf.fit(X_tr, y_tr)
print(f"test accuracy: {clf.score(X_te, y_te):.3f}")
labels = list(clf.classes_)
plot_confusion_matrix(
    confusion_matrix(y_te, clf.predict(X_te), labels=labels),
    labels,
    os.path.join(out, "feature_pipeline_confusion.png"),
    title="EfficientNet-Lite0 features + LogisticRegression",
    overwrite=True,
)
