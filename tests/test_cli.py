"""The ``skconv`` command itself: parsing, help, exit statuses and one-line errors.

Each verb has its own file (test_cli_fit.py, ...), as each has its own module in
skconv/cli/; the tests here hold every verb to the contract the package docstring
states, in-process through ``main``.
"""

import re

import pytest
from cli_helpers import run, tiny_model, tree
from PIL import Image

from skconv.cli import build_parser, main


@pytest.fixture(scope="module")
def images(us_folder):
    return us_folder


@pytest.fixture(scope="module")
def fitted(images, tmp_path_factory):
    """A folder holding a model.joblib and a pre-split folder, for the error cases."""
    out = tmp_path_factory.mktemp("fit") / "run"
    tiny_model(images, out / "model.joblib")
    split = tmp_path_factory.mktemp("split") / "split"
    assert run("split", images, split)[0] == 0
    return out, split


# -- errors ------------------------------------------------------------------------------


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """An empty current folder, so that a default --out would show up in it."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd


def _error_cases(images, fitted, root):
    (root / "empty").mkdir()
    (root / "full").mkdir()
    (root / "full" / "keep.txt").write_text("mine")
    (root / "loose").mkdir()
    Image.new("L", (16, 16)).save(root / "loose" / "a.png")
    (root / "partsplit" / "train" / "a").mkdir(parents=True)
    for name, sizes in (("small", (6, 2)), ("oneclass", (6,)), ("corrupt", (6, 6))):
        for cls, n in zip(("a", "b"), sizes):
            (root / name / cls).mkdir(parents=True)
            for k in range(n):
                Image.new("L", (16, 16), 40 * k).save(root / name / cls / f"{k}.png")
    (root / "corrupt" / "b" / "3.png").write_bytes(b"not a png")
    model = str(fitted[0] / "model.joblib")
    image = str(next(images.glob("benign/*.png")))
    return {
        "missing data": (["fit", str(root / "nope")], 2, "DATA '.*nope' does not exist"),
        "data is a file": (["fit", image], 2, "is not a folder"),
        "empty folder": (["fit", str(root / "empty")], 1, "empty.*is empty"),
        "no class folders": (["fit", str(root / "loose")], 1, "no images in class folders"),
        "train without val": (["fit", str(root / "partsplit")], 1, "has train but no val"),
        "class folder too small": (
            ["fit", str(root / "small")],
            1,
            "Cannot split '.*small': class folder '.*small/b' has 2 images, too few",
        ),
        "one class folder": (
            ["fit", str(root / "oneclass")],
            1,
            "data '.*oneclass' has one class folder only \\('.*oneclass/a'\\)",
        ),
        "corrupt image": (
            ["fit", str(root / "corrupt")],
            1,
            "Cannot decode image file '.*corrupt/b/3.png'",
        ),
        "split class folder too small": (
            ["split", str(root / "small"), str(root / "s")],
            1,
            "class folder '.*small/b' has 2 images, too few",
        ),
        "unknown backbone": (
            ["fit", str(images), "--backbone", "resnet5O"],
            2,
            "--backbone: Unknown backbone 'resnet5O'. Did you mean resnet50",
        ),
        "out not empty": (
            ["fit", str(images), "--out", str(root / "full")],
            2,
            "--out '.*full' exists and is not empty",
        ),
        "out inside data": (
            ["fit", str(images), "--out", str(images / "run")],
            2,
            "--out '.*run' lies inside DATA",
        ),
        "bad fraction": (
            ["fit", str(images), "--val", "1.5"],
            2,
            "argument --val: must be a fraction in \\(0, 1\\)",
        ),
        "fractions sum": (
            ["split", str(images), str(root / "s"), "--val", "0.5", "--test", "0.5"],
            2,
            "sum to 1",
        ),
        "epochs in features mode": (
            ["fit", str(images), "--epochs", "2"],
            2,
            "--epochs applies to --mode finetune only",
        ),
        "split options on split data": (
            ["fit", str(fitted[1]), "--test", "0.2"],
            2,
            "--test apply when DATA is split here",
        ),
        "no-group-duplicates on split data": (
            ["fit", str(fitted[1]), "--no-group-duplicates"],
            2,
            "--no-group-duplicates apply when DATA is split here",
        ),
        "unknown option": (
            ["fit", str(images), "--bogus"],
            2,
            "unrecognized arguments: --bogus \\(see 'skconv fit --help'\\)",
        ),
        "no verb": ([], 2, "choose a verb"),
        "unknown verb": (["train"], 2, "invalid choice: 'train'"),
        "split missing src": (
            ["split", str(root / "nope"), str(root / "s")],
            2,
            "SRC '.*nope' does not exist",
        ),
        "split dst not empty": (
            ["split", str(images), str(root / "full")],
            2,
            "DST '.*full' exists and is not empty",
        ),
        "split dst in src": (["split", str(images), str(images / "split")], 2, "lies inside SRC"),
        "predict missing model": (
            ["predict", str(root / "m.joblib"), image],
            2,
            "MODEL '.*m.joblib' does not exist",
        ),
        "predict missing image": (
            ["predict", model, str(root / "x.png")],
            2,
            "IMAGES '.*x.png' does not exist",
        ),
        "predict empty folder": (
            ["predict", model, str(root / "empty")],
            1,
            "IMAGES folder '.*empty' holds no image files",
        ),
        "predict not a model": (["predict", image, image], 1, "Cannot load MODEL '.*png'"),
        "backbones no match": (["backbones", "nothing*"], 2, "no backbone matches PATTERN"),
    }


CASES = [
    "missing data",
    "data is a file",
    "empty folder",
    "no class folders",
    "train without val",
    "class folder too small",
    "one class folder",
    "corrupt image",
    "split class folder too small",
    "unknown backbone",
    "out not empty",
    "out inside data",
    "bad fraction",
    "fractions sum",
    "epochs in features mode",
    "split options on split data",
    "no-group-duplicates on split data",
    "unknown option",
    "no verb",
    "unknown verb",
    "split missing src",
    "split dst not empty",
    "split dst in src",
    "predict missing model",
    "predict missing image",
    "predict empty folder",
    "predict not a model",
    "backbones no match",
]


@pytest.mark.parametrize("case", CASES)
def test_errors_are_one_line_with_a_status_and_write_nothing(
    case, images, fitted, workdir, tmp_path, capsys
):
    root = tmp_path / "inputs"
    root.mkdir()
    argv, status, pattern = _error_cases(images, fitted, root)[case]
    trees = {p: tree(p) for p in (root, images, fitted[0], fitted[1])}
    assert main(argv) == status
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("skconv: error: ")
    assert re.search(pattern, lines[0]), lines[0]
    assert "Traceback" not in captured.err + captured.out
    assert list(workdir.iterdir()) == []  # no default skconv-out/
    assert {p: tree(p) for p in trees} == trees  # nothing written, nothing changed
    assert sorted(p.name for p in root.iterdir()) == [
        "corrupt",
        "empty",
        "full",
        "loose",
        "oneclass",
        "partsplit",
        "small",
    ]


def test_traceback_option_shows_the_exception(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="is empty"):
        main(["fit", str(tmp_path / "empty"), "--traceback"])


@pytest.mark.parametrize("verb", ["split", "fit", "predict", "backbones", "demo"])
def test_every_verb_has_help(verb, capsys):
    assert main([verb, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: skconv {verb}")
    assert "--traceback" in out


def test_main_help_and_version(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for verb in ("split", "fit", "predict", "backbones", "demo"):
        assert verb in out
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("skconv 0.")


def test_ctrl_c_is_status_130_and_one_line(monkeypatch, capsys):
    import skconv.cli.backbones

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(skconv.cli.backbones, "run", interrupted)
    assert main(["backbones"]) == 130
    assert capsys.readouterr().err == "skconv: interrupted\n"


def test_group_duplicates_default_is_the_library_default():
    from skconv.cli._common import group_duplicates
    from skconv.experiment import DEFAULT_GROUP_DUPLICATES

    parse = build_parser().parse_args
    for verb in (["fit", "data"], ["split", "src", "dst"]):
        assert parse(verb).group_duplicates is None  # not given: fit can tell
        assert group_duplicates(parse(verb)) is DEFAULT_GROUP_DUPLICATES
        assert group_duplicates(parse([*verb, "--group-duplicates"])) is True
        assert group_duplicates(parse([*verb, "--no-group-duplicates"])) is False
