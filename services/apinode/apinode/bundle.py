"""Bundled datasets: a compact, deterministic columnar file (.npz) held in memory.

File format (a zip of ``.npy`` members, deflate-compressed, fixed timestamps so
the same columns always give the same bytes):

* ``<column>.npy`` for numeric, boolean and high-cardinality string columns
  (strings as numpy fixed-width unicode);
* ``<column>.codes.npy`` + ``<column>.categories.npy`` for low-cardinality
  string columns (dictionary encoding: unsigned integer codes into a sorted
  array of distinct values).

Zip member order is column order.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

_FIXED_TIMESTAMP = (1980, 1, 1, 0, 0, 0)
_CODES = ".codes"
_CATEGORIES = ".categories"
_MAX_CATEGORIES = 65535


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def _encode(name: str, values: np.ndarray) -> list[tuple[str, np.ndarray]]:
    if values.dtype.kind != "U":
        return [(name, values)]
    categories, codes = np.unique(values, return_inverse=True)
    if len(categories) > _MAX_CATEGORIES or len(categories) * 2 > len(values):
        return [(name, values)]
    code_dtype = np.uint8 if len(categories) <= 255 else np.uint16
    return [(name + _CODES, codes.astype(code_dtype)), (name + _CATEGORIES, categories)]


def write_bundle(path: str | Path, columns: Mapping[str, np.ndarray]) -> None:
    """Write columns (all the same length) to ``path``; same input, same bytes."""
    lengths = {name: len(values) for name, values in columns.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"columns differ in length: {lengths}")
    for name in columns:
        if name.endswith((_CODES, _CATEGORIES)) or "/" in name:
            raise ValueError(f"invalid column name {name!r}")
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as archive:
        for name, values in columns.items():
            for member, array in _encode(name, np.asarray(values)):
                info = zipfile.ZipInfo(member + ".npy", date_time=_FIXED_TIMESTAMP)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                archive.writestr(info, _npy_bytes(array), compresslevel=6)


class EncodedColumn:
    """A dictionary-encoded string column: ``categories[codes[i]]`` is row i."""

    __slots__ = ("codes", "categories")

    def __init__(self, codes: np.ndarray, categories: np.ndarray) -> None:
        self.codes = codes
        self.categories = categories

    def __len__(self) -> int:
        return len(self.codes)

    def decode(self) -> np.ndarray:
        return self.categories[self.codes]


def read_bundle(path: str | Path) -> dict[str, np.ndarray | EncodedColumn]:
    """Read every column of a bundle, in file order; encoded strings stay encoded."""
    columns: dict[str, np.ndarray | EncodedColumn] = {}
    pending_codes: dict[str, np.ndarray] = {}
    with zipfile.ZipFile(path) as archive:
        for member in archive.namelist():
            with archive.open(member) as handle:
                array = np.lib.format.read_array(handle, allow_pickle=False)
            name = member.removesuffix(".npy")
            if name.endswith(_CODES):
                pending_codes[name.removesuffix(_CODES)] = array
            elif name.endswith(_CATEGORIES):
                base = name.removesuffix(_CATEGORIES)
                columns[base] = EncodedColumn(pending_codes.pop(base), array)
            else:
                columns[name] = array
    if pending_codes:
        raise ValueError(f"{path}: codes without categories for {sorted(pending_codes)}")
    return columns
