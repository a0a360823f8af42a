"""Every bad input skconv is tested with, run through load_image, the transformer, a
Pipeline and FineTuneClassifier; a random-bytes fuzz; the property test's count; and the
offline behaviour of the documented backbones. Writes benchmarks/results/robustness.md.

Run from the project root:  .venv/bin/python benchmarks/robustness.py [N_FUZZ_FILES]
"""

from __future__ import annotations

import collections
import inspect
import platform
import re
import subprocess
import sys
import tempfile
import time
import warnings
from datetime import date
from pathlib import Path

import numpy as np
import PIL
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from bad_inputs import ARRAY_CASES, mutate, seed_files, write_file_cases  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402
from test_robustness import DOWNLOADS, PACKAGED, run_offline  # noqa: E402

import skconv  # noqa: E402
from skconv import ConvFeatureTransformer, FineTuneClassifier  # noqa: E402
from skconv.datasets import make_ultrasound  # noqa: E402
from skconv.images import ImageLoadError, load_image  # noqa: E402
from skconv.zoo._hub import network_reachable as _network_reachable  # noqa: E402

N_FUZZ = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
OUT = ROOT / "benchmarks" / "results" / "robustness.md"
BACKBONE = dict(backbone="mobilenet_v3_small", weights=None, image_size=32)
# One batch per fit: at 32 px a training batch of one image has 1x1 batch-norm inputs.
FINETUNE = dict(
    **BACKBONE, batch_size=8, max_epochs=1, train_split=None, patience=None, random_state=0
)


def pipeline():
    return Pipeline(
        [("features", ConvFeatureTransformer(**BACKBONE)), ("head", LogisticRegression())]
    )


def attempt(call, name: str | None) -> str:
    """'ok', 'named' (an ImageLoadError/ValueError naming ``name``), or what went wrong."""
    try:
        call()
        return "ok"
    except ImageLoadError as exc:
        return "named" if name is None or name in str(exc) else f"unnamed: {exc}"
    except Exception as exc:  # anything else is a finding, recorded as such
        return f"{type(exc).__name__}: {exc}"


def file_rows(folder: Path) -> list[dict]:
    X, _ = make_ultrasound(n_per_class=2, image_size=40, random_state=0)
    good = []
    for i, image in enumerate(X[:4]):
        good.append(str(folder / f"good_{i}.png"))
        Image.fromarray(image).save(good[-1])
    labels = ["a", "a", "b", "b"]
    transformer = ConvFeatureTransformer(**BACKBONE).fit(good)
    pipe, finetune = pipeline().fit(good, labels), FineTuneClassifier(**FINETUNE).fit(good, labels)
    rows = []
    for case in write_file_cases(folder / "messy"):
        stages = {
            "load_image": lambda c=case: load_image(c.path),
            "transformer fit": lambda c=case: ConvFeatureTransformer(**BACKBONE).fit([c.path]),
            "transform": lambda c=case: transformer.transform([good[0], c.path]),
            "Pipeline fit": lambda c=case: pipeline().fit([*good, c.path], [*labels, "b"]),
            "Pipeline predict": lambda c=case: pipe.predict([c.path]),
            "FineTune fit": lambda c=case: FineTuneClassifier(**FINETUNE).fit(
                [*good, c.path], [*labels, "b"]
            ),
            "FineTune predict": lambda c=case: finetune.predict([c.path]),
        }
        outcomes = {stage: attempt(call, case.path) for stage, call in stages.items()}
        if case.expect == "load":
            pixels = np.asarray(load_image(case.path)).astype(int)
            correct = pixels.shape == case.pixels.shape and (
                np.abs(pixels - case.pixels).max() <= case.atol
            )
            outcomes["pixels"] = "ok" if correct else "WRONG PIXELS"
        rows.append({"case": case, "outcomes": outcomes})
    return rows


def array_rows() -> list[dict]:
    X, _ = make_ultrasound(n_per_class=3, image_size=24, random_state=1)
    X, y = X[[0, 3, 6, 1, 4, 7]], np.array(["a", "b"] * 3)
    runs = {
        "transformer": lambda X, y: ConvFeatureTransformer(**BACKBONE).fit(X).transform(X),
        "Pipeline": lambda X, y: pipeline().fit(X, y),
        "FineTune": lambda X, y: FineTuneClassifier(**FINETUNE).fit(X, y),
    }
    rows = []
    for case in ARRAY_CASES:
        bad = case.make(X)
        labels = y[: len(bad)] if hasattr(bad, "__len__") and not isinstance(bad, str) else y
        outcomes = {}
        for name, run in runs.items():
            try:
                run(bad, labels)
                outcomes[name] = "NO ERROR"
            except ValueError as exc:
                matched = re.search(case.match, str(exc))
                outcomes[name] = "clear" if matched else f"unclear: {exc}"
            except Exception as exc:
                outcomes[name] = f"{type(exc).__name__}: {exc}"
        rows.append({"kind": case.kind, "name": case.name, "outcomes": outcomes})
    return rows


def label_rows() -> list[dict]:
    """Bad labels, unseen labels and unusual memory layouts, through the same estimators."""
    from skorch.dataset import Dataset
    from skorch.helper import predefined_split

    X, _ = make_ultrasound(n_per_class=3, image_size=24, random_state=1)
    X, y = X[[0, 3, 6, 1, 4, 7]], np.array(["a", "b"] * 3)
    valid = predefined_split(Dataset(X[:2], np.array(["a", "z"])))
    fitted = FineTuneClassifier(**FINETUNE).fit(X, y)
    label_cases = [
        ("one class", "Pipeline", lambda: pipeline().fit(X, ["a"] * 6), "at least 2 classes"),
        ("one class", "FineTune", lambda: FineTuneClassifier(**FINETUNE).fit(X, ["a"] * 6),
         "single class"),
        ("X/y length mismatch", "Pipeline", lambda: pipeline().fit(X, y[:4]),
         "inconsistent numbers"),
        ("X/y length mismatch", "FineTune", lambda: FineTuneClassifier(**FINETUNE).fit(X, y[:4]),
         "6 images but y has 4"),
        ("2-D y", "FineTune", lambda: FineTuneClassifier(**FINETUNE).fit(X, y[:, None]), "1-D"),
        ("unseen label, validation set", "FineTune",
         lambda: FineTuneClassifier(**{**FINETUNE, "train_split": valid}).fit(X, y),
         "not seen in fit"),
        ("unseen label, partial_fit", "FineTune",
         lambda: fitted.partial_fit(X[:2], np.array(["a", "c"])), "not seen in fit"),
    ]  # fmt: skip
    rows = []
    for kind, model, call, match in label_cases:
        try:
            call()
            outcome = "NO ERROR"
        except ValueError as exc:
            outcome = "clear" if re.search(match, str(exc)) else f"unclear: {exc}"
        rows.append({"kind": kind, "model": model, "outcome": outcome})
    rgb = np.ascontiguousarray(np.stack([X, X[:, ::-1], X[:, :, ::-1]], axis=-1))
    frozen = rgb.copy()
    frozen.setflags(write=False)
    views = {
        "negative strides": np.ascontiguousarray(rgb[:, ::-1])[:, ::-1],
        "every other element": np.repeat(rgb, 2, axis=2)[:, :, ::2],
        "Fortran order": np.asfortranarray(rgb),
        "transposed view": np.ascontiguousarray(rgb.transpose(0, 2, 1, 3)).transpose(0, 2, 1, 3),
        "read-only": frozen,
    }
    transformer = ConvFeatureTransformer(**BACKBONE).fit(rgb)
    pipe, finetune = pipeline().fit(rgb, y), FineTuneClassifier(**FINETUNE).fit(rgb, y)
    models = {"transformer": transformer.transform, "Pipeline": pipe.predict_proba,
              "FineTune": finetune.predict_proba}  # fmt: skip
    for kind, view in views.items():
        before = view.tobytes()
        for model, method in models.items():
            same = np.array_equal(method(view), method(rgb))
            untouched = view.tobytes() == before
            outcome = "identical" if same and untouched else "DIFFERENT"
            rows.append({"kind": f"layout: {kind}", "model": model, "outcome": outcome})
    return rows


def fuzz(n: int, folder: Path) -> dict:
    rng = np.random.default_rng(2024)
    seeds = seed_files()
    names = sorted(seeds)
    path = folder / "upload.png"
    counts, slowest, problems = collections.Counter(), 0.0, []
    for i in range(n):
        if i % 2 == 0:
            data = rng.bytes(int(rng.integers(0, 2049)))
        else:
            seed = seeds[names[i // 2 % len(names)]]
            k = int(rng.integers(0, 9))
            data = mutate(
                seed,
                rng.integers(0, 4096, k).tolist(),
                rng.integers(0, 256, k).tolist(),
                None if rng.random() < 0.5 else int(rng.integers(0, 4096)),
            )
        path.write_bytes(data)
        start = time.perf_counter()
        try:
            load_image(str(path))
            counts["loaded"] += 1
        except ImageLoadError as exc:
            counts["named ImageLoadError"] += 1
            if str(path) not in str(exc):
                problems.append(f"unnamed: {exc}")
        except Exception as exc:
            counts[f"other: {type(exc).__name__}"] += 1
            problems.append(f"{type(exc).__name__}: {exc}")
        slowest = max(slowest, time.perf_counter() - start)
    return {"n": n, "counts": counts, "slowest": slowest, "problems": problems}


def property_test_count() -> str:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/test_robustness.py::test_random_bytes_load_or_fail_cleanly",
            "--hypothesis-show-statistics",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    found = re.search(r"(\d+) passing, (\d+) failing", done.stdout)
    return f"{found.group(1)} passing, {found.group(2)} failing" if found else done.stdout[-500:]


def per_stage(rows: list[dict], stage: str) -> str:
    """'2 named', '5 ok', '3 ok, 1 named' or '-' for one stage over the rows of a class."""
    counts = collections.Counter(
        row["outcomes"][stage] for row in rows if stage in row["outcomes"]
    )
    return ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items())) or "-"


def main() -> None:
    torch.set_num_threads(1)  # tiny networks; steadier timings on a shared machine
    warnings.simplefilter("ignore")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        files = file_rows(tmp)
        arrays = array_rows()
        labels = label_rows()
        fuzzed = fuzz(N_FUZZ, tmp)
        offline = run_offline(
            tmp,
            PACKAGED
            + DOWNLOADS
            + [
                "drop:resnet50",
                "drop:timm/resnet50.a1_in1k",
                "dns-hang:resnet50",
                "dns-hang:timm/convnext_tiny",
            ],
        )
    hypothesis = property_test_count()

    lines = [
        "# Robustness: bad inputs, random bytes, no network",
        "",
        f"Made by `.venv/bin/python benchmarks/robustness.py {N_FUZZ}` on {date.today()}, "
        f"{platform.platform()}, Python {platform.python_version()}, skconv "
        f"{skconv.__version__}, torch {torch.__version__}, Pillow {PIL.__version__}; "
        f"{time.perf_counter() - started:.0f} s. Networks: random-weight "
        "MobileNet-V3-Small at 32 px (the outcome, not the accuracy, is measured).",
        "",
        "## Messy image files",
        "",
        "Each file is fed to `load_image`, `ConvFeatureTransformer.fit` (checks the "
        "container only) and `.transform`, `Pipeline(transformer, LogisticRegression)`"
        ".fit/.predict and `FineTuneClassifier`.fit/.predict. *named* = an "
        "`ImageLoadError` (a `ValueError`) whose message holds the file's path; *ok* = "
        "loaded (for loadable files, *pixels ok* = equal to the expected RGB array).",
        "",
        "| bad-input class | files | expected | load_image | transform | Pipeline fit | "
        "Pipeline predict | FineTune fit | FineTune predict | pixels |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    by_kind = collections.defaultdict(list)
    for row in files:
        by_kind[row["case"].kind].append(row)
    stages = ["load_image", "transform", "Pipeline fit", "Pipeline predict"]
    stages += ["FineTune fit", "FineTune predict", "pixels"]
    for kind, rows in by_kind.items():
        names = ", ".join(f"`{r['case'].name}`" for r in rows)
        expected = collections.Counter(r["case"].expect for r in rows)
        expected = ", ".join(f"{n} {e}" for e, n in expected.items())
        cells = " | ".join(per_stage(rows, stage) for stage in stages)
        lines.append(f"| {kind} | {names} | {expected} | {cells} |")
    fit_only = collections.Counter(row["outcomes"]["transformer fit"] for row in files)
    lines += [
        "",
        f"{len(files)} files in {len(by_kind)} classes. `ConvFeatureTransformer.fit`, which "
        "checks the container and decodes nothing, gave "
        + ", ".join(f"{n} {o}" for o, n in fit_only.items())
        + ": decoding, and its errors, happen in `transform`. *pixels*: the loaded RGB "
        "array equals the expected one (Pillow's own conversion for CMYK and palette "
        "images, the rotation for EXIF, the 1/257 scaling for 16-bit).",
        "",
        "## Bad arrays and labels",
        "",
        "| bad-input class | case | transformer | Pipeline | FineTune |",
        "|---|---|---|---|---|",
    ]
    for row in arrays:
        o = row["outcomes"]
        lines.append(
            f"| {row['kind']} | `{row['name']}` | {o['transformer']} | {o['Pipeline']} | "
            f"{o['FineTune']} |"
        )
    lines += ["", "| labels and memory layout | estimator | outcome |", "|---|---|---|"]
    for row in labels:
        lines.append(f"| {row['kind']} | {row['model']} | {row['outcome']} |")
    lines += [
        "",
        "*clear* = a `ValueError` whose message says what is wrong (the patterns are in "
        "`tests/bad_inputs.py` and above). *identical* = the same features or "
        "probabilities, to the bit, as for the C-contiguous array, and the input's bytes "
        "unchanged.",
        "",
        "## Random bytes",
        "",
        f"- Property test (`test_random_bytes_load_or_fail_cleanly`, hypothesis, 2 s "
        f"deadline per file, 120 s timeout): {hypothesis} examples (random bytes, and "
        "valid PNG/JPEG/GIF/BMP/TIFF/WEBP/PPM/ICO/TGA files with overwritten bytes or cut "
        "short).",
        f"- Fuzz in this script: {fuzzed['n']} files, half random bytes, half corrupted "
        f"valid files: "
        + ", ".join(f"{k} {v}" for k, v in fuzzed["counts"].items())
        + f"; slowest file {fuzzed['slowest'] * 1000:.0f} ms; "
        f"{len(fuzzed['problems'])} crashes or unnamed errors"
        + (f" (first: {fuzzed['problems'][0]})" if fuzzed["problems"] else "")
        + ".",
        "",
        "## No network",
        "",
        "`load_backbone(name)` in a subprocess with socket connections blocked, "
        "`TORCH_HOME` and `HF_HUB_CACHE` empty, `HF_HUB_OFFLINE` unset. *refused*: "
        "connections fail at once; *drop*: a firewall drops packets (connect waits for "
        "its timeout); *dns-hang*: the resolver answers after 15 s. The network probe "
        + (
            "bounds the DNS lookup (zoo.py probe in a thread)."
            if "thread" in inspect.getsource(_network_reachable)
            else "does not bound the DNS lookup: dns-hang rows wait for the resolver."
        ),
        "",
        "| backbone | network | outcome | seconds | connections tried |",
        "|---|---|---|---|---|",
    ]
    for item, result in offline.items():
        mode, _, name = item.rpartition(":") if ":" in item else ("refused", "", item)
        outcome = result["result"].split(":")[0]
        lines.append(
            f"| `{name}` | {mode or 'refused'} | {outcome} | {result['seconds']:.1f} | "
            f"{result['connections']} |"
        )
    lines.append("")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
