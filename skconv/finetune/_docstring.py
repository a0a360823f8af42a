"""The docstring of FineTuneClassifier, long enough to be a module of its own."""

CLASSIFIER_DOC = """Fine-tune a pretrained ConvNet on a new image classification task.

    The second way of transfer learning, as a skorch classifier: callbacks,
    ``history``, ``partial_fit``, ``GridSearchCV`` and pickling all work as in
    skorch. ``X`` takes every form :func:`skconv.images.check_images` accepts
    (normally an array of file paths) and ``y`` may hold strings or integers.

    By default the backbone's last two stages and a new head train
    (``train_layers="auto"``) on the outputs of the frozen early layers, computed
    once for each of ``n_views`` augmented views, and predictions average each image
    with its mirror (``tta=True``). On BUSI's five duplicate-aware 70:15:15 splits
    (``benchmarks/results/finetune_ablation_busi_2026-12-02.md``, 2-core CPU) these
    reached
    83.0 ± 4.7 % test accuracy against 76.2 ± 2.4 % for Lite0 features and a logistic
    regression (macro AUC 0.933, 110 to 207 s per fit); training every layer
    (``train_layers="all"``) reached 77.9 ± 5.4 % in 927 s. What each default is
    worth is given with its parameter below; the others follow the practice that
    works on a few hundred images on a CPU: AdamW, ``lr=1e-3`` for the head and ten
    times less for the pretrained layers, one head-only epoch, one epoch of linear
    warm-up and a cosine decay, early stopping after 4 epochs without a better
    validation loss (best weights restored), at most 15 epochs.

    Early stopping watches a validation part split off the training images. Sets
    with near-duplicates (the same scan re-cropped or re-annotated, as in many
    medical sets) need that split to keep them together, or early stopping watches
    copies of training images: pass their group labels, for example from
    :func:`skconv.model_selection.find_near_duplicates`, as ``fit(X, y,
    groups=groups)``, and every group lands whole on one side of the split.

    Parameters
    ----------
    backbone : str, default="efficientnet_lite0"
        A name from :func:`skconv.zoo.list_backbones`.
    weights : str, path-like or None, default="DEFAULT"
        Pretrained weights of the backbone, as in :func:`skconv.zoo.load_backbone`.
    train_layers : str, default="auto"
        Which layers train. ``"all"``: every layer, images through the whole network
        each epoch (classic fine-tuning). ``"head"``: the new head alone.
        ``"auto"``: the backbone's last two stages and the head. A stage name (see
        ``module_.backbone.stage_names``): the layers after that stage. Unless
        ``"all"``, the frozen early layers run once per augmented view
        (``n_views``) and their outputs are reused in every epoch, which is what
        makes fine-tuning affordable on a CPU.
    n_views : int, default=6
        Views of each training image computed through the frozen layers when
        ``train_layers`` is not ``"all"``: the plain crop, then augmented ones; epoch
        ``k`` trains on view ``k`` modulo ``n_views``. 1 without augmentation.
    head_init : {"random", "linear_probe"}, default="random"
        ``"random"``: a new head, initialised small so that predictions start near
        uniform. ``"linear_probe"`` starts it from a logistic regression fitted on the
        frozen features of the unaugmented training images (LP-FT, Kumar et al.
        2022), so that training starts where the fixed features stand. Measured, the
        probe did not pay: 82.4 ± 3.6 % on BUSI's five splits against 83.0 ± 4.7 %
        for the random head, the same macro AUC (0.933); on 28-px grey BUSI with
        binary labels at ``image_size=96``, AUC 0.819 against 0.869.
    label_smoothing : float, default=0.1
        Label smoothing of the cross-entropy loss (0 turns it off). Without it, BUSI's
        five splits fell from 82.4 to 76.7 % (measured with the linear-probe head).
    freeze_epochs : int, default=1
        Head-only epochs at the start (see :class:`BackboneFreezer`), the backbone
        in eval mode so that its batch-norm statistics stay the pretrained ones.
    backbone_lr_scale : float, default=0.1
        Learning rate of the pretrained layers relative to ``lr``.
    warmup_epochs : int, default=1
        Linear warm-up epochs after the head-only ones, before the cosine decay.
    augment : {"default"} or None, default="default"
        Training-only augmentation (:class:`TrainAugmentation`); None turns it off
        (and ``n_views`` is then 1). Without it, BUSI's five splits fell from 82.4 to
        74.7 % (measured with the linear-probe head).
    class_weight : {"balanced"} or None, default=None
        Weights passed to the loss; ``"balanced"`` weighs classes inversely to
        their frequency in ``y``.
    patience : int or None, default=4
        Early stopping patience on the validation loss; None trains all epochs.
        Needs a validation split (``train_split``).
    tta : bool, default=True
        At prediction, average the logits of each image and of its mirror. On BUSI's
        five splits it added 2.1 points of accuracy (80.3 to 82.4 %) and 0.006 of macro
        AUC to the same fitted models (with the linear-probe head), for twice the
        prediction time.
    refit : bool, default=True
        After early stopping has chosen the number of epochs on the validation part,
        train the network again from the pretrained weights on every image given to
        ``fit`` (training and validation part) for that many epochs, on the same
        schedule, as ``GridSearchCV(refit=True)`` refits on all the data. No image is
        only watched. Measured (``benchmarks/results/finetune_ablation.md``, row R
        against row C, 5 seeds each): mean accuracy equal on BUSI and 28-px BUSI and
        +0.2 points on brain MRI, mean AUC +0.7, +0.2 and -1.2 points, for about 75 %
        more fit time then. The refit now reuses the first pass's views of the
        training images: a default fit on BUSI took 111 s, against 88 s for the
        version before the refit (``benchmarks/results/finetune_fit_time.md``, one
        run, 2-core CPU). Needs a validation part;
        ``history`` is then the refit's and ``validation_history_`` the pass that
        early stopping watched.
    blend_probe : bool, default=False
        The safety net: also fit a linear probe (:class:`ConvFeatureTransformer`
        features of the same pretrained backbone, scaled, and a logistic regression
        with ``C`` chosen by cross-validation) on the training part, and predict with
        the mix of the probe's and the network's probabilities that has the lowest
        log loss on the validation images (``network_weight_``, in steps of 0.1;
        ties go to the network). So the fitted classifier never predicts worse on
        its validation images than the fixed features it started from. Needs a
        validation part. Off by default (``benchmarks/results/finetune_ablation.md``,
        row P against row C, 5 seeds each): it lowered BUSI's mean accuracy by 1.4
        points (one split by 4.3), moved brain MRI's by 0.2, and on 28-px BUSI raised
        accuracy by 2.4 points but lowered AUC by 0.6.
    image_size : int or None, default=None
        Side of the square input; None uses the weights' own size.
    num_workers : int, default=0
        DataLoader processes that decode and augment images: for the cached trunk
        views, and for skorch's loaders unless ``iterator_train__num_workers`` or
        ``iterator_valid__num_workers`` is given.
    random_state : int or None, default=None
        Seeds the random draws of ``fit`` (initialisation of the head, shuffling,
        augmentation, dropout) so that two fits on the same CPU machine give the same
        model, bit for bit. ``fit`` draws from its own seeded copy of torch's
        generators: torch's global random state is the same before and after.
        ``partial_fit`` draws from torch's global generators. On a GPU, cuDNN's
        convolution algorithms and bfloat16 autocast are not bitwise deterministic:
        expect predictions that differ in the last digits.
    checkpoint_dir : str, path-like or None, default=None
        A folder where the state after every epoch is saved (see
        :class:`EpochCheckpoint`). If it holds a checkpoint of the same setup
        (parameters, data, labels, validation split), ``fit`` resumes from it
        and, on the same machine, reaches the same model as an uninterrupted run;
        a finished run is restored without training. A checkpoint of another
        setup raises ValueError and is left alone: delete it or choose another
        folder. Use one folder per model, not with ``GridSearchCV``.
    module : type, default=FineTuneNet
        The network class; ``module__dropout`` and others reach it.
    criterion : type, default=torch.nn.CrossEntropyLoss
        The loss.
    optimizer : type, default=torch.optim.AdamW
        The optimizer; ``optimizer__weight_decay`` and others reach it.
    lr : float, default=1e-3
        Learning rate of the head.
    max_epochs : int, default=15
        Most epochs to train.
    batch_size : int, default=32
        Images per step.
    train_split : callable or None, default=GroupValidSplit(0.15, stratified=True, random_state=0)
        How the validation part is made; pass
        ``skorch.helper.predefined_split(skorch.dataset.Dataset(X_val, y_val))``
        to use the part from :func:`skconv.model_selection.train_val_test_split`.
        The default is skorch's ``ValidSplit(0.15, stratified=True, random_state=0)``,
        except that ``groups`` given to ``fit`` stay whole (:class:`GroupValidSplit`);
        with ``groups``, skorch's own ``ValidSplit`` with a number as ``cv`` is
        refused, since it would put members of a group on both sides.
    callbacks : list or None, default=None
        More skorch callbacks.
    verbose : int, default=0
        1 prints skorch's epoch table.
    device : str, default="cpu"
        ``"cuda"`` trains on a GPU, with bfloat16 mixed precision.
    **kwargs
        Any other skorch parameter (``iterator_train__...``, ``module__...``).

    Attributes
    ----------
    classes_ : ndarray
        The original labels, in the order of ``predict_proba``'s columns.
    preprocessing_ : Preprocessing
        The resize, crop and normalisation used.
    class_weight_ : ndarray or None
        The weights given to the loss.
    history : skorch.History
        Per-epoch losses, accuracy and learning rate of the network's training (the
        refit's, when ``refit``).
    validation_history_ : skorch.History or None
        With ``refit``, the history of the pass that early stopping watched (with
        ``valid_loss``); None without a refit.
    refit_epochs_ : int or None
        Epochs of the refit on all images; None without one.
    network_weight_ : float
        The network's weight in the predicted probabilities, the probe having
        ``1 - network_weight_``: 1.0 without ``blend_probe`` or a validation part.
    chosen_ : {"network", "probe", "blend"}
        What ``predict`` uses: ``network_weight_`` 1, 0, or in between.
    probe_ : LinearProbe or None
        The linear probe; refitted on the training and validation images with
        ``refit``, else fitted on the training part only. None when
        ``network_weight_`` is 1.
    blend_losses_ : dict or None
        Validation log loss of each network weight tried.
    validation_proba_ : ndarray or None
        Probabilities of the validation images (in the validation part's order) by
        the model that was chosen, before the refit trained on them: held-out
        predictions, as ``cross_val_predict``'s. None with neither ``refit`` nor
        ``blend_probe``, or without a validation part: ``predict_proba`` gives them then.

    See Also
    --------
    ConvFeatureTransformer : Keeps the pretrained layers fixed instead.

    Examples
    --------
    >>> import numpy as np
    >>> from skconv import FineTuneClassifier
    >>> X = np.random.default_rng(0).integers(0, 256, (12, 40, 40), dtype=np.uint8)
    >>> y = np.array(["cat", "dog"] * 6)
    >>> clf = FineTuneClassifier("resnet18", weights=None, image_size=32, max_epochs=2,
    ...                          train_split=None, patience=None, random_state=0)
    >>> clf.fit(X, y).predict(X[:2]).shape
    (2,)
    """
