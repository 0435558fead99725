"""The dataset's classes: their canonical names in label order, the folder names of every release that map to
them, and the classes of each task (4, 3 or 2 classes).
"""

from __future__ import annotations

# Canonical class names: the current Kaggle release's folder names, in label order.
CLASSES = ("COVID", "Lung_Opacity", "Normal", "Viral Pneumonia")
TASK_CLASSES = {
    4: CLASSES,
    3: ("COVID", "Normal", "Viral Pneumonia"),
    2: ("COVID", "Normal"),
}

# Folder names seen in the current and older releases, compared after lower-casing and dropping
# separators ("COVID-19" → "covid19", "Viral Pneumonia" → "viralpneumonia").
_CLASS_ALIASES = {
    "covid": "COVID",
    "covid19": "COVID",
    "lungopacity": "Lung_Opacity",
    "normal": "Normal",
    "viralpneumonia": "Viral Pneumonia",
}


def canonical_class(folder_name: str) -> str | None:
    """Map a class folder name from any release to its canonical class, or None if it is not one."""
    key = "".join(ch for ch in folder_name.lower() if ch.isalnum())
    return _CLASS_ALIASES.get(key)


def task_classes(task: int) -> tuple[str, ...]:
    if task not in TASK_CLASSES:
        raise ValueError(f"task must be one of {sorted(TASK_CLASSES)} (number of classes); found {task!r}")
    return TASK_CLASSES[task]
