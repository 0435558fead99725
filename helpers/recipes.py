"""Training recipes: Paper A as published, and the recipe a careful practitioner would use.

A recipe states the *intended* settings. Run profiles may shrink image size and epochs (fast, demo);
every run writes the recipe it was given, in full, and the settings it actually used to its settings.json,
so a run made from a modified recipe (`dataclasses.replace(PAPER_A, ...)`) resumes and reloads on its own.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Recipe:
    name: str
    head: str  # "paper_a" (Dense 1024 head) or "linear" (a linear map from pooled features to logits)
    dropout: float | None
    image_size: int
    normalisation: str  # "rescale" (/255) or "resnet50" (keras preprocess_input)
    flip: bool  # random horizontal flips of training images
    class_weights: bool  # weight the loss by inverse class frequency
    epochs: int  # upper bound, early stopping decides
    patience: int  # early stopping on validation loss, best weights restored
    batch_size: int
    warmup_epochs: int  # epochs with the backbone frozen, training only the head (0: none)
    warmup_learning_rate: float
    learning_rate: float  # Adam; for fine-tuning after the warm-up, or for the whole run without one
    freeze_batchnorm: bool  # keep BatchNorm in inference mode while fine-tuning a pretrained backbone
    scratch_learning_rate: float  # used instead when the backbone is randomly initialised (offline)
    backbone: str = "resnet50"
    select_best: bool = True  # keep the epoch with the best validation loss (else: the last epoch)
    early_stopping: bool = True
    notes: str = ""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def image_size_under(self, profile) -> int:
        """The one rule for a run's image size: the recipe's, shrunk to the profile's (fast 64, demo 128, full 224+).
        Training uses it, and notebook 03 builds its models by it."""
        return min(self.image_size, profile.image_size)

    @classmethod
    def from_dict(cls, values: dict) -> Recipe:
        """The recipe a run folder recorded (fields added since then take their defaults)."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


PAPER_A = Recipe(
    name="paper_a",
    head="paper_a",
    dropout=0.5,
    image_size=128,  # the paper's model summary says 128×128×3 (its text says 224)
    normalisation="rescale",  # pixels / 255, as the paper
    flip=False,  # the paper does not augment
    class_weights=False,  # the paper does not weight classes
    epochs=100,
    patience=5,  # the paper uses early stopping without giving its patience
    batch_size=32,  # not given in the paper
    warmup_epochs=0,
    warmup_learning_rate=1e-5,
    learning_rate=1e-5,  # Adam 1e-5 from the first epoch, whole network trainable
    freeze_batchnorm=False,
    scratch_learning_rate=1e-5,  # faithful even from scratch: the paper's rate, whatever the weights
    notes="Paper A as published: ResNet50 + GAP + Dense(1024) + Dropout(0.5), /255, Adam 1e-5, early stopping.",
)

IMPROVED = Recipe(
    name="improved",
    # A linear head on the pooled features: the 2.1 M parameters of Dense(1024) add capacity the task
    # does not need, and a linear head makes class activation maps exact (notebook 05).
    head="linear",
    dropout=0.2,  # light regularisation of the new head (Keras' transfer-learning guide uses 0.2)
    image_size=224,  # what ResNet50 was pretrained at; 7×7 activation maps instead of 4×4
    normalisation="resnet50",  # the input scaling the ImageNet weights expect
    flip=True,  # as Paper B; debatable for radiographs (notebook 02), applied to training images only
    class_weights=True,  # Viral Pneumonia is 7.6× rarer than Normal: weight the loss, do not drop data
    epochs=30,
    patience=4,
    batch_size=32,
    # Train the new head first with the backbone frozen, so its random gradients do not wreck the
    # pretrained features; then fine-tune everything at a low rate.
    warmup_epochs=3,
    warmup_learning_rate=1e-3,
    learning_rate=1e-5,
    # Fine-tuning with BatchNorm in inference mode keeps the pretrained statistics (Keras guide).
    freeze_batchnorm=True,
    scratch_learning_rate=1e-3,  # from random weights 1e-5 barely moves in a few epochs
    notes="preprocess_input, 224 px, frozen-backbone warm-up then fine-tuning with BatchNorm in inference "
          "mode, class weights, horizontal flips.",
)

PAPER_B = Recipe(
    name="paper_b",
    head="linear",  # Paper B replaced ResNet18's last fully connected layer: a linear head on pooled features
    dropout=None,
    image_size=224,
    normalisation="resnet50",  # "normalised according to the pre-trained model standards"
    flip=True,  # horizontal flips, as Paper B
    class_weights=False,  # Paper B's sub-samples are balanced
    epochs=20,
    patience=20,
    batch_size=6,  # Paper B's mini-batch
    warmup_epochs=0,
    warmup_learning_rate=1e-5,
    learning_rate=1e-5,  # Paper B names both SGD (momentum 0.1) and Adam; Adam at its 1e-5 here
    freeze_batchnorm=False,
    scratch_learning_rate=1e-5,  # faithful even from scratch
    select_best=False,  # a fixed 20 epochs and no validation set: the last epoch is the model
    early_stopping=False,
    notes="Paper B: ResNet (50 here; 18 in the paper) with a replaced last layer, 224 px, flips, batch 6, "
          "1e-5, 20 epochs; random sub-sample cross-validation (3 × 900 balanced images, 90/10).",
)

# Paper B's own backbone. Needs the optional extra: pip install 'cxr-resnet50-course[resnet18]'.
PAPER_B_RESNET18 = dataclasses.replace(
    PAPER_B, name="paper_b_resnet18", backbone="resnet18",
    normalisation="imagenet_torch",  # KerasHub's ResNet weights come from timm: ImageNet mean/std on 0..1
    notes="Paper B with its own ResNet18 backbone (KerasHub resnet_18_imagenet).",
)

# The built-in recipes by name, for the command line (`--recipe`); code passes Recipe objects.
RECIPES = {recipe.name: recipe for recipe in (PAPER_A, IMPROVED, PAPER_B, PAPER_B_RESNET18)}

# Random-init (offline) runs: evaluation uses BatchNorm's moving statistics, which lag behind weights trained
# from scratch (Keras' default momentum is 0.99). Random-init runs use a faster momentum and re-estimate the
# statistics on training data at every epoch's end, before the epoch is validated and saved, so that the kept epoch
# is chosen on what the saved model scores (training.ValidateAsSaved); experiments/batchnorm_trial.py measures what
# each does
# (its README has the figures and the command that reproduces them).
SCRATCH_BATCHNORM_MOMENTUM = 0.9


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise ValueError(f"recipe must be one of {', '.join(sorted(RECIPES))}; found {name!r}")
    return RECIPES[name]


def split_epochs(recipe: Recipe, epochs: int, pretrained: bool) -> tuple[int, int]:
    """(warm-up epochs, main epochs) within a budget of `epochs`: a warm-up needs pretrained weights
    worth protecting and at least one epoch left for fine-tuning."""
    if not pretrained or recipe.warmup_epochs == 0 or epochs < 2:
        return 0, epochs
    warmup = min(recipe.warmup_epochs, epochs // 2)
    return warmup, epochs - warmup
