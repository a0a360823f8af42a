"""Fine-tuning every layer, with the learning curves it leaves behind.

Fine-tunes the packaged SqueezeNet on a synthetic set for a few epochs, with early
stopping on a validation part, and saves ``finetune_curves.png``.
"""

import os

from skorch.dataset import Dataset
from skorch.helper import predefined_split

from skconv import FineTuneClassifier
from skconv.datasets import make_ultrasound
from skconv.model_selection import train_val_test_split
from skconv.report import plot_learning_curves

out = os.environ.get("SKCONV_EXAMPLES_OUT", ".")
X, y = make_ultrasound(n_per_class=30, image_size=64, random_state=0)
X_tr, X_va, X_te, y_tr, y_va, y_te = train_val_test_split(X, y, stratify=y, random_state=0)

clf = FineTuneClassifier(
    "squeezenet1_1_caffe",
    image_size=96,
    max_epochs=6,
    lr=3e-3,
    backbone_lr_scale=0.3,
    train_split=predefined_split(Dataset(X_va, y_va)),
    random_state=0,
    verbose=1,
)
clf.fit(X_tr, y_tr)
print(f"test accuracy: {clf.score(X_te, y_te):.3f}")
plot_learning_curves(clf, os.path.join(out, "finetune_curves.png"))
