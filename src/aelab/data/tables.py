"""Tables (``.csv``, ``.tsv``, ``.parquet``) as float features: numbers standardised, text one-hot.

Read with pyarrow, which infers each column's type. :func:`fit_table` learns, from the training rows alone,
each numeric column's mean and standard deviation (a constant column is divided by 1, not 0) and each text
column's categories (sorted), and returns them as a JSON-able transform; :func:`apply_table` applies such a
transform to any table with the same columns, matched by name: a category the training rows did not have
becomes all zeros. Missing or infinite numbers are refused, naming the column, unless ``impute`` ("mean" or
"median") fills them with the training rows' statistic, also kept in the transform.
"""
from __future__ import annotations

import csv
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from ..errors import AelabError, closest, first_line

TABLE_SUFFIXES = (".csv", ".tsv", ".parquet")
IMPUTE = ("mean", "median")
MAX_CATEGORIES = 50  # a text column with more distinct values than this and than half the rows is an identifier
IMPUTE_HINT = "or train with --impute mean|median (impute=...) to fill them with the training rows' statistic"


def is_table_name(path) -> bool:
    return str(path).lower().endswith(TABLE_SUFFIXES)


# ---------------------------------------------------------------------------------------------- reading
def read_table(path: str | Path) -> pa.Table:
    """The table at ``path`` with pyarrow's column types; a column whose later rows hold text where its
    first rows held numbers is read as text (and then refused by name, see :func:`fit_table`)."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            table = pq.read_table(path)
        else:
            table = _read_delimited(path, "\t" if suffix == ".tsv" else ",")
    except (pa.ArrowException, OSError) as exc:
        raise AelabError(f"{path} is not a readable {suffix[1:]} table ({first_line(exc, 160)}); write it with a "
                         f"header row and one row per sample") from None
    names = table.column_names
    twice = sorted(n for n, k in Counter(names).items() if k > 1)
    if twice:
        raise AelabError(f"{path} has the column name '{twice[0]}' more than once; give every column its own name")
    if table.num_rows == 0:
        raise AelabError(f"{path} has no rows, only a header; give it one row per sample")
    return table


def _read_delimited(path: Path, delimiter: str) -> pa.Table:
    as_text: dict = {}
    while True:
        try:
            return pacsv.read_csv(path, parse_options=pacsv.ParseOptions(delimiter=delimiter),
                                  convert_options=pacsv.ConvertOptions(column_types=as_text))
        except pa.ArrowInvalid as exc:
            column = re.search(r"In CSV column #(\d+)", str(exc))
            if column is None:
                raise _ragged(path, delimiter) or exc
            name = _header(path, delimiter)[int(column.group(1))]
            if name in as_text:
                raise
            as_text[name] = pa.string()  # pyarrow guessed numbers from the first rows; read it again as text


def _header(path: Path, delimiter: str) -> list[str]:
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as f:
        return next(csv.reader(f, delimiter=delimiter), [])


def _ragged(path: Path, delimiter: str) -> AelabError | None:
    """The one-line error for the first row whose number of fields differs from the header's (read with the
    standard library only after pyarrow refused the file), or None when every row has the header's width."""
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as f:
        rows = csv.reader(f, delimiter=delimiter)
        width = len(next(rows, []))
        for row in rows:
            if row and len(row) != width:
                return AelabError(f"{path} line {rows.line_num} has {len(row)} fields but the header has {width}; "
                                  f"fix that row (a missing or extra {'tab' if delimiter == chr(9) else 'comma'})")
    return None


# ---------------------------------------------------------------------------------------------- columns
def feature_columns(table: pa.Table, path, label_column=None, drop_columns=None) -> list[str]:
    """The columns that become features: every column but the label and the dropped ones, each checked."""
    names = table.column_names
    for name in [label_column] * (label_column is not None) + list(drop_columns or []):
        if name not in names:
            raise AelabError(f"{path} has no column '{name}'{closest(name, names)}; its columns are "
                             f"{_listed(names)}")
    inputs = [n for n in names if n != label_column and n not in (drop_columns or [])]
    if not inputs:
        raise AelabError(f"{path} has no column left to learn from once the label and dropped columns are taken out")
    for name in inputs:
        _kind(table, name, path)
    return inputs


def _kind(table: pa.Table, name: str, path) -> str:
    """"numeric" or "text"; an empty column or one of dates, lists, ... is refused, naming it."""
    col = table[name]
    if col.null_count == len(col):
        raise AelabError(f"column '{name}' of {path} is empty (no value in its {len(col)} rows); drop it "
                         f"(--drop-columns {name})")
    t = col.type
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t) or pa.types.is_decimal(t):
        return "numeric"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_dictionary(t):
        return "text"
    raise AelabError(f"column '{name}' of {path} holds {t}, neither numbers nor text; drop it (--drop-columns "
                     f"{name}) or convert it to numbers")


def _numbers(col: pa.ChunkedArray, name: str, path) -> np.ndarray:
    try:
        return pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False)  # missing cells become NaN
    except pa.ArrowInvalid:
        raise AelabError(f"column '{name}' of {path} holds text, but the run read it as numbers; give numbers "
                         f"there") from None


def _texts(col: pa.ChunkedArray) -> pa.ChunkedArray:
    return pc.cast(col.dictionary_decode() if pa.types.is_dictionary(col.type) else col, pa.string())


def _listed(names, at_most: int = 8) -> str:
    names = list(names)
    more = f" and {len(names) - at_most} more" if len(names) > at_most else ""
    return ", ".join(names[:at_most]) + more


# ---------------------------------------------------------------------------------------------- labels
def table_labels(table: pa.Table, label_column: str, path) -> tuple[np.ndarray, list[str]]:
    """The class index of every row and the class names: the label column's distinct values, sorted (numbers
    numerically), as text."""
    col = table[label_column]
    if col.null_count:
        raise AelabError(f"the label column '{label_column}' of {path} has {col.null_count} empty cells; give "
                         f"every row a label, or drop those rows")
    if pa.types.is_floating(col.type) and not pc.all(pc.equal(col, pc.round(col))).as_py():
        raise AelabError(f"the label column '{label_column}' of {path} holds fractional numbers; labels are "
                         f"classes: give a column of class names or whole numbers")
    distinct = pc.unique(col)
    distinct = distinct.take(pc.array_sort_indices(distinct))
    classes = _label_texts(distinct).to_pylist()
    if len(classes) < 2:
        raise AelabError(f"the label column '{label_column}' of {path} holds one value ('{classes[0]}'); labels "
                         f"need two classes or more: leave out --label-column to learn without labels")
    return label_ids(table, label_column, classes, path), classes


def label_ids(table: pa.Table, label_column: str, classes: list[str], path) -> np.ndarray:
    """The label column's values as indices into ``classes``; a value not among them is refused."""
    texts = _label_texts(table[label_column])
    ids = pc.index_in(texts, value_set=pa.array(classes, pa.string())).fill_null(-1).to_numpy(zero_copy_only=False)
    if (ids < 0).any():
        row = int(np.flatnonzero(ids < 0)[0])
        raise AelabError(f"the label '{texts[row].as_py()}' (row {row}) of {path} is not one of the run's classes "
                         f"({_listed(classes)}); give rows of those classes, or leave out the label column")
    return ids.astype(np.int64)


def _label_texts(values):
    if pa.types.is_floating(values.type):  # 3.0 -> "3": whole numbers written either way are one class
        values = pc.cast(values, pa.int64())
    return _texts(values) if isinstance(values, pa.ChunkedArray) else pc.cast(values, pa.string())


# ---------------------------------------------------------------------------------------------- transform
def fit_table(table: pa.Table, train_rows: np.ndarray, path, *, label_column=None, drop_columns=None,
              impute=None, classes=None) -> dict:
    """The transform learnt from the rows ``train_rows`` of ``table`` (JSON-able; see the module's docstring):
    ``inputs`` (the source columns, in order), ``columns`` (the feature names, in x's order), ``numeric``
    ({column: [mean, std]}), ``categorical`` ({column: [categories]}), ``fill`` ({column: value}, with impute)."""
    if impute is not None and impute not in IMPUTE:
        raise AelabError(f"impute must be one of {', '.join(IMPUTE)}, got {impute!r}")
    inputs = feature_columns(table, path, label_column, drop_columns)
    numeric, categorical, fill, columns = {}, {}, {}, []
    for name in inputs:
        if _kind(table, name, path) == "numeric":
            values = _numbers(table[name], name, path)[train_rows]
            ok = np.isfinite(values)
            if impute is not None:
                if not ok.any():
                    raise AelabError(f"column '{name}' of {path} has no finite value in the training rows to "
                                     f"impute from; drop it (--drop-columns {name})")
                fill[name] = float(np.mean(values[ok]) if impute == "mean" else np.median(values[ok]))
                values = np.where(ok, values, fill[name])
            std = float(values.std())
            numeric[name] = [float(values.mean()), std if std > 0 else 1.0]  # a constant column: divide by 1
            columns.append(name)
        else:
            categorical[name] = _categories(table[name], train_rows, name, path)
            columns += [f"{name}={c}" for c in categorical[name]]
    return {"kind": "table", "inputs": inputs, "columns": columns, "numeric": numeric, "categorical": categorical,
            "label_column": label_column, "classes": classes, "drop_columns": list(drop_columns or []),
            "impute": impute, "fill": fill}


def _categories(col: pa.ChunkedArray, train_rows: np.ndarray, name: str, path) -> list[str]:
    texts = _texts(col).take(pa.array(train_rows))
    cats = sorted(c for c in pc.unique(texts).to_pylist() if c is not None)
    numbers = [c for c in cats[:1000] if _is_number(c)]
    if len(numbers) >= 0.9 * min(len(cats), 1000) and len(numbers) < len(cats):
        word = next(c for c in cats if not _is_number(c))
        raise AelabError(f"column '{name}' of {path} holds numbers and text such as '{word}'; clean the text "
                         f"values, or leave those cells empty to mark them missing (--impute mean|median fills them)")
    if len(cats) > MAX_CATEGORIES and len(cats) > len(train_rows) / 2:
        raise AelabError(f"column '{name}' of {path} has {len(cats)} different values in {len(train_rows)} training "
                         f"rows: an identifier or free text, not a category; drop it (--drop-columns {name})")
    return cats


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def apply_table(table: pa.Table, transform: dict, path) -> tuple[np.ndarray, np.ndarray | None]:
    """``transform`` applied to the rows of ``table``: float32 features (N, D) in the transform's column order,
    and the label column's class indices when the table has it (else None). Columns are matched by name: a
    missing or unknown column, text where numbers were, or NaN without impute is refused, naming it."""
    names = set(table.column_names)
    inputs, label = transform["inputs"], transform.get("label_column")
    missing = [n for n in inputs if n not in names]
    if missing:
        raise AelabError(f"{path} lacks the column(s) {_listed(missing)} that the run was trained on; give a table "
                         f"with the columns {_listed(inputs)}")
    unknown = [n for n in table.column_names if n not in inputs and n != label
               and n not in transform.get("drop_columns", [])]
    if unknown:
        raise AelabError(f"{path} has the column(s) {_listed(unknown)} that the run does not know; take them out "
                         f"(the run was trained on {_listed(inputs)})")
    x = np.empty((table.num_rows, len(transform["columns"])), np.float32)
    at = 0
    for name in inputs:
        if name in transform["numeric"]:
            x[:, at] = _standardised(table[name], name, transform, path)
            at += 1
        else:
            cats = transform["categorical"][name]
            ids = pc.index_in(_texts(table[name]), value_set=pa.array(cats, pa.string()))
            ids = ids.fill_null(-1).to_numpy(zero_copy_only=False)
            x[:, at:at + len(cats)] = ids[:, None] == np.arange(len(cats))  # an unknown category: all zeros
            at += len(cats)
    y = None
    if label is not None and label in names:
        y = label_ids(table, label, transform["classes"], path)
    return x, y


def _standardised(col: pa.ChunkedArray, name: str, transform: dict, path) -> np.ndarray:
    values = _numbers(col, name, path)
    bad = ~np.isfinite(values)
    if bad.any():
        if name not in transform.get("fill", {}):
            raise AelabError(f"column '{name}' of {path} has {int(bad.sum())} rows with NaN, infinite or missing "
                             f"values (the first: row {int(np.flatnonzero(bad)[0])}); clean them, {IMPUTE_HINT}")
        values = np.where(bad, transform["fill"][name], values)
    mean, std = transform["numeric"][name]
    return (values - mean) / std


__all__ = ["IMPUTE", "TABLE_SUFFIXES", "apply_table", "feature_columns", "fit_table", "is_table_name", "label_ids",
           "read_table", "table_labels"]
