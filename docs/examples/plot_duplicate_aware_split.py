"""Near-duplicates and the split: keep every copy of a scan on one side.

Makes a synthetic set in which some images are re-cropped copies of others (as in many
medical sets), finds them with ``find_near_duplicates``, and compares an image-level split
with a duplicate-aware one: how many test images have a copy in the training part.
Saves ``duplicate_leak.png``.
"""

import os

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from skconv.datasets import make_ultrasound
from skconv.model_selection import find_near_duplicates, train_val_test_split

out = os.environ.get("SKCONV_EXAMPLES_OUT", ".")
X, y = make_ultrasound(n_per_class=40, image_size=96, random_state=0)
rng = np.random.default_rng(0)
sources = rng.choice(len(X), size=40, replace=False)
copies = []
for i in sources:  # re-crop by a few pixels and resize back: what re-saved scans look like
    top, left = rng.integers(0, 6, size=2)
    crop = Image.fromarray(X[i][top : top + 90, left : left + 90])
    copies.append(np.asarray(crop.resize((96, 96), Image.Resampling.BILINEAR)))
X = np.concatenate([X, np.stack(copies)])
y = np.concatenate([y, y[sources]])

groups = find_near_duplicates(X)
print(f"{len(X)} images, {len(np.unique(groups))} groups")


def leaked(test, train):
    return int(np.isin(groups[test], groups[train]).sum())


idx = np.arange(len(X))
image_level = train_val_test_split(idx, stratify=y, random_state=0)
grouped = train_val_test_split(idx, stratify=y, groups=groups, random_state=0)
counts = [leaked(image_level[2], image_level[0]), leaked(grouped[2], grouped[0])]
print(f"test images with a copy in train: image-level {counts[0]}, duplicate-aware {counts[1]}")

fig = Figure(figsize=(5, 3.5))
ax = fig.subplots()
ax.bar(["image-level split", "duplicate-aware split"], counts, color=["tab:red", "tab:green"])
ax.set_ylabel("test images with a copy in train")
ax.set_title("Near-duplicates leak into image-level splits")
fig.tight_layout()
fig.savefig(os.path.join(out, "duplicate_leak.png"), dpi=100)
