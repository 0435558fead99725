"""Where each image came from: the dataset's four metadata sheets, read and joined to the scanned images.

The COVID-19 Radiography Database is a composite. Its COVID images come from several collections (BIMCV, SIRM,
Eurorad, a Hannover repository, GitHub collections, …), Lung Opacity and most Normal images from the RSNA pneumonia
challenge, Viral Pneumonia and 1,341 Normal images from a paediatric collection in Guangzhou. One sheet per class,
beside the class folders (`COVID.metadata.xlsx`, …), names each file and the URL it came from; `collection` turns a
URL into a short name. A model that can tell the collection from the pixels can score well without looking at the
lungs (DeGrave et al., Nature Machine Intelligence 2021): this module gives the numbers that measure it.

Sheet names and file names differ in small ways (case, `NORMAL-1` for `Normal-1.png`, no extension): they are
matched on `name_key`, and what does not match is counted and named. Without sheets every source is "unknown".
"""

from __future__ import annotations

import dataclasses
import functools
import re
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pandas as pd

from helpers.tasks import CLASSES

SHEET_COLUMNS = ("FILE NAME", "FORMAT", "SIZE", "URL")
UNKNOWN = "unknown"
# A piece of the URL → the collection's short name; the first piece found wins.
COLLECTIONS = (
    ("bimcv", "BIMCV"), ("padchest", "BIMCV"),
    ("sirm.org", "SIRM"),
    ("eurorad", "Eurorad"),
    ("ml-workgroup", "Hannover"),  # Hannover Medical School's covid-19-image-repository
    ("ieee8023", "GitHub ieee8023"),  # Cohen et al.'s covid-chestxray-dataset
    ("covid-cxnet", "COVID-CXNet"),
    ("rsna", "RSNA"),
    ("chest-xray-pneumonia", "Guangzhou"), ("mendeley", "Guangzhou"),  # the paediatric collection
)


def sheet_name(cls: str) -> str:
    """"Viral Pneumonia" → "Viral Pneumonia.metadata.xlsx": the file beside the class folders."""
    return f"{cls}.metadata.xlsx"


def collection(url) -> str:
    """A short name for the collection a URL points to: a known one, else the URL's host, else "unknown"."""
    text = "" if pd.isna(url) else str(url).strip().lower()
    for piece, name in COLLECTIONS:
        if piece in text:
            return name
    host = urlparse(text if "//" in text else "//" + text).hostname if text else None
    return host.removeprefix("www.") if host else UNKNOWN


def name_key(name) -> str:
    """What a sheet's name and a file's name are compared on: no extension, lower case, `_` as a space.

    "NORMAL-1", "Normal-1.png" and "normal-1.PNG" all give "normal-1".
    """
    text = str(name).strip()
    if re.search(r"\.(png|jpe?g|bmp|tiff?|gif)$", text, re.IGNORECASE):
        text = text.rsplit(".", 1)[0]
    return re.sub(r"[\s_]+", " ", text).lower()


@dataclasses.dataclass
class Sources:
    """The scan index with a `source` column, and what could not be matched."""

    index: pd.DataFrame  # the scan's rows, plus `source` (the collection, or "unknown")
    missing: dict  # class → why its sheet could not be used (absent, unreadable, wrong columns)
    unmatched_images: list  # relpaths of images no sheet row names
    unmatched_rows: list  # (class, FILE NAME) of sheet rows that name no scanned image

    @property
    def known(self) -> bool:
        """True if at least one image has a known source: what needs the sources can be measured."""
        return bool((self.index["source"] != UNKNOWN).any())

    @property
    def table(self) -> pd.DataFrame:
        """Images per class (rows) and source (columns), without totals: what `evaluation.group_only_rules` takes."""
        return source_table(self.index, margins=False)

    def held_out_split(self, held_out: str, positive: str = "COVID", others=("Normal",), seed: int = 0,
                       rows: pd.DataFrame | None = None) -> dict:
        """`held_out_split` on these images (or on `rows`, a subset of them, e.g. a sample per class)."""
        return held_out_split(self.index if rows is None else rows, held_out, positive, others, seed)

    def describe(self) -> str:
        """What `python -m helpers data check` prints: the statement, then images per class and source, with totals."""
        if not self.known:
            return self.statement()
        return f"{self.statement()}\nImages per class and source:\n{source_table(self.index).to_string()}"

    def to_dict(self) -> dict:
        """The sources part of `python -m helpers data check --json`."""
        counts = self.index.groupby(["label", "source"]).size()
        return {"statement": self.statement(), "missing_sheets": dict(self.missing),
                "per_class": {c: {s: int(n) for s, n in counts[c].items()} for c in counts.index.unique(0)},
                "unmatched_images": self.unmatched_images, "unmatched_rows": [list(r) for r in self.unmatched_rows]}

    def statement(self) -> str:
        """One sentence on what was read, and what was not."""
        n = len(self.index)
        if not self.known:
            return (f"No usable metadata sheets ({', '.join(f'{c}: {why}' for c, why in self.missing.items())}): "
                    "every image's source is 'unknown', and what needs the sources is skipped.")
        said = [f"Sources read from the metadata sheets: {n - len(self.unmatched_images):,} of {n:,} images matched"]
        if self.missing:
            said.append("no sheet for " + ", ".join(f"{c} ({why})" for c, why in self.missing.items()))
        if self.unmatched_images:
            said.append(f"{len(self.unmatched_images):,} images named in no sheet (source 'unknown', e.g. "
                        f"{', '.join(self.unmatched_images[:3])})")
        if self.unmatched_rows:
            said.append(f"{len(self.unmatched_rows):,} sheet rows name no image file (e.g. "
                        f"{', '.join(name for _, name in self.unmatched_rows[:3])})")
        return "; ".join(said) + "."


def read_sheet(path: Path) -> pd.DataFrame:
    """One metadata sheet, as text; raises ValueError if it lacks the columns `FILE NAME` and `URL`."""
    stat = Path(path).stat()  # the real sheets take seconds to read: read again only when the file changed
    return _read_sheet(str(path), stat.st_mtime_ns, stat.st_size).copy()


@functools.lru_cache(maxsize=8)
def _read_sheet(path: str, mtime_ns: int, size: int) -> pd.DataFrame:
    sheet = pd.read_excel(path, dtype=str)  # needs openpyxl
    sheet.columns = [str(c).strip().upper() for c in sheet.columns]
    if not {"FILE NAME", "URL"} <= set(sheet.columns):
        raise ValueError(f"columns {list(sheet.columns)}, expected {list(SHEET_COLUMNS)}")
    return sheet.dropna(subset=["FILE NAME"])


def image_sources(index: pd.DataFrame, folder, classes=None) -> Sources:
    """Join each scanned image (a row of `scan.index`) to the collection its class's sheet in `folder` names.

    Missing sheets, unreadable ones and unmatched names never raise: they are recorded, and the source is "unknown".
    """
    classes = [c for c in (classes or CLASSES) if (index["label"] == c).any()]
    missing, matched, unmatched_rows = {}, [], []
    keys = index["label"] + "|" + index["relpath"].map(lambda p: name_key(Path(p).name))
    for cls in classes:
        path = Path(folder) / sheet_name(cls)
        if not path.exists():
            missing[cls] = "absent"
            continue
        try:
            sheet = read_sheet(path)
        except Exception as exc:  # noqa: BLE001 - a broken sheet must not stop the lesson: say why, go on
            missing[cls] = f"unreadable: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            continue
        sheet_keys = cls + "|" + sheet["FILE NAME"].map(name_key)
        found = sheet_keys.isin(set(keys))
        unmatched_rows += [(cls, name) for name in sheet.loc[~found, "FILE NAME"]]
        matched.append(pd.Series(sheet["URL"].map(collection).to_numpy(), index=sheet_keys).groupby(level=0).first())
    source = keys.map(pd.concat(matched)) if matched else pd.Series(np.nan, index=index.index, dtype=object)
    joined = index.assign(source=source.fillna(UNKNOWN).to_numpy())
    unmatched = joined.loc[source.isna().to_numpy() & ~joined["label"].isin(list(missing)), "relpath"]
    return Sources(joined, missing, list(unmatched), unmatched_rows)


def source_table(index: pd.DataFrame, margins: bool = True) -> pd.DataFrame:
    """Images per class (rows) and source (columns), with totals unless `margins=False`: the class × source table
    (without totals, what `helpers.evaluation.group_only_rules` takes: the best a rule knowing only the source does)."""
    table = pd.crosstab(index["label"], index["source"], margins=margins, margins_name="all")
    table.index.name, table.columns.name = "class", "source"
    return table


def held_out_split(index: pd.DataFrame, held_out: str, positive: str = "COVID", others=("Normal",),
                   seed: int = 0) -> dict:
    """Two splits of the same sizes for `positive` against the classes `others`: {"held_out": (train, test),
    "random": (train, test)}.

    Held out: the test set is every `positive` image of the collection `held_out` and as many images of each class in
    `others` (at most half of it), drawn at random; training uses the other collections' `positive` images and the
    other images of `others`. Random: the same test images of `others`, and as many `positive` images drawn from all
    collections. The only difference between the two is whether the test's collection was seen in training.
    """
    pos = index[index["label"] == positive]
    test_pos = pos[pos["source"] == held_out]
    if test_pos.empty or len(test_pos) == len(pos):
        raise ValueError(f"{held_out!r} must hold some, not all, {positive} images; sources: "
                         f"{pos['source'].value_counts().to_dict()}")
    rest = index[index["label"].isin(list(others))]
    test_rest = pd.concat([rest[rest["label"] == c].pipe(lambda r: r.sample(n=min(len(test_pos), len(r) // 2),
                                                                            random_state=seed)) for c in others])
    held = (pd.concat([pos.drop(test_pos.index), rest.drop(test_rest.index)]), pd.concat([test_pos, test_rest]))
    random_test_pos = pos.sample(n=len(test_pos), random_state=seed)
    random = (pd.concat([pos.drop(random_test_pos.index), rest.drop(test_rest.index)]),
              pd.concat([random_test_pos, test_rest]))
    return {"held_out": held, "random": random}
