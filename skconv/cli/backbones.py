"""``skconv backbones [PATTERN]``: the model zoo, with feature and input sizes."""

from __future__ import annotations

from ._common import UsageError


def register(verbs, parents) -> None:
    """Add the ``backbones`` sub-parser to ``verbs``, with the options in ``parents``."""
    p = verbs.add_parser(
        "backbones",
        parents=parents,
        help="list the pretrained networks",
        description="List the backbones skconv can build: their source, feature size "
        "(computed for the packaged ones; '-' for others, which would have to be "
        "built), input size and whether their weights are available offline "
        "(packaged, or already in the torchvision/timm cache).",
    )
    p.add_argument(
        "pattern",
        metavar="PATTERN",
        nargs="?",
        default="*",
        help="shell-style filter on the name, e.g. 'resnet*' or 'timm/convnext*' (default: all)",
    )
    p.add_argument(
        "--all",
        action="store_true",
        help="also list every pretrained timm model as timm/<name> (about 1800)",
    )
    p.set_defaults(func=run)


def run(args) -> int:
    """Print the table of :func:`skconv.zoo.list_backbones` that match PATTERN."""
    from ..report import text_table
    from ..zoo import list_backbones

    infos = list_backbones(args.pattern, include_timm=args.all)
    if not infos:
        raise UsageError(
            f"no backbone matches PATTERN {args.pattern!r}; try 'skconv "
            "backbones' for the list, or --all to include timm models."
        )
    rows = []
    for info in infos:
        features = str(_feature_size(info.name)) if info.source == "packaged" else "-"
        rows.append(
            [
                info.name,
                info.source,
                features,
                _input_size(info),
                "yes" if info.available_offline else "no",
            ]
        )
    print("\n".join(text_table(["name", "source", "features", "input", "offline"], rows)))
    n_offline = sum(info.available_offline for info in infos)
    print(
        f"\n{len(infos)} backbone(s), {n_offline} available offline (packaged weights or in "
        "the local cache); others download their weights on first use."
    )
    if not args.all and not args.pattern.startswith("timm/"):
        import timm

        print(
            f"Not listed: {len(timm.list_models(pretrained=True))} timm models "
            "(skconv backbones --all, or a pattern such as 'timm/convnext*')."
        )
    return 0


def _feature_size(name: str) -> int:
    import torch

    from ..zoo import FINAL_STAGE, load_backbone, stage_dims

    # On the meta device only shapes are computed: no weights are read or initialised.
    with torch.device("meta"):
        (dim,) = stage_dims(load_backbone(name, weights=None).module, [FINAL_STAGE], 64)
    return dim


def _input_size(info) -> str:
    from .. import zoo

    try:
        if info.source == "packaged":
            return str(zoo._registry.PACKAGED[info.name].preprocessing.image_size)
        if info.source == "torchvision":
            import torchvision.models as tvm

            return str(tvm.get_model_weights(info.name).DEFAULT.transforms().crop_size[0])
        import timm

        cfg = timm.models.get_pretrained_cfg(info.weights)
        return str(cfg.input_size[-1]) if cfg is not None else "-"
    except Exception:  # a listing must not fail on one entry's metadata
        return "-"
