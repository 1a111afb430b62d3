"""Key indexes built at load time: compact for ``<prefix><digits>`` ids, a dict otherwise."""

from __future__ import annotations

import numpy as np

_NO_ROWS: tuple[int, ...] = ()


class PrefixedIntIndex:
    """Keys like ``C0000001``: the digits as a sorted int64 array, searched with searchsorted.

    8 bytes per row instead of a dict entry and a str object (about 100 bytes), and
    when the ids are dense and in order (the usual export) a lookup is one subtraction.
    """

    def __init__(self, prefix: str, width: int, numbers: np.ndarray) -> None:
        self.prefix, self.width = prefix, width
        self._digits = width - len(prefix)
        self._size = len(numbers)
        self._base = int(numbers[0]) if len(numbers) else 0
        self._dense = bool(len(numbers)) and bool(
            np.array_equal(numbers, np.arange(self._base, self._base + len(numbers), dtype=np.int64))
        )
        if self._dense:
            self._sorted = self._order = None
            self._unique = True
        else:
            self._order = np.argsort(numbers, kind="stable")
            self._sorted = numbers[self._order]
            self._unique = bool(np.all(self._sorted[1:] != self._sorted[:-1]))

    @classmethod
    def build(cls, keys: np.ndarray) -> PrefixedIntIndex | None:
        """The compact index for these keys, or None when they do not all share one shape."""
        if keys.dtype.kind != "U" or len(keys) == 0:
            return None
        first = str(keys[0])
        prefix = first.rstrip("0123456789")
        width = len(first)
        if width == len(prefix) or width - len(prefix) > 18 or keys.dtype.itemsize // 4 < width:
            return None
        chars = np.ascontiguousarray(keys).view("U1").reshape(len(keys), -1)
        if chars.shape[1] > width and np.any(chars[:, width:] != ""):
            return None
        if prefix and np.any(chars[:, : len(prefix)] != np.array(list(prefix))):
            return None
        # Digit by digit: temporaries of one column each, not a (rows x digits) int64 matrix.
        numbers = np.zeros(len(keys), dtype=np.int64)
        for position in range(len(prefix), width):
            digit = chars[:, position].view(np.uint32).astype(np.int64) - ord("0")
            if np.any((digit < 0) | (digit > 9)):
                return None
            numbers *= 10
            numbers += digit
        return cls(prefix, width, numbers)

    def _number(self, key: object) -> int | None:
        if type(key) is not str or len(key) != self.width or not key.startswith(self.prefix):
            return None
        digits = key[len(self.prefix) :]
        return int(digits) if digits.isascii() and digits.isdigit() else None

    def rows(self, key: object) -> tuple[int, ...]:
        """Row positions holding this key (empty when none)."""
        number = self._number(key)
        if number is None:
            return _NO_ROWS
        if self._dense:
            position = number - self._base
            return (position,) if 0 <= position < self._size else _NO_ROWS
        start = int(np.searchsorted(self._sorted, number))
        if start == self._size or self._sorted[start] != number:
            return _NO_ROWS
        if self._unique:
            return (int(self._order[start]),)
        stop = int(np.searchsorted(self._sorted, number, side="right"))
        return tuple(int(i) for i in self._order[start:stop])

    @property
    def dense(self) -> bool:
        return self._dense

    def key_at(self, row: int) -> str:
        """The key of a row; only for a dense index, where the key column need not be kept (``zfill``:
        0.19 µs, a nested format spec 0.44, on every lookup's row)."""
        return self.prefix + str(self._base + row).zfill(self._digits)


class DictIndex:
    """Any hashable keys: a dict from key to row positions."""

    def __init__(self, keys: list) -> None:
        self._rows: dict[object, tuple[int, ...]] = {}
        for position, key in enumerate(keys):
            self._rows[key] = self._rows.get(key, _NO_ROWS) + (position,)

    def rows(self, key: object) -> tuple[int, ...]:
        try:
            return self._rows.get(key, _NO_ROWS)
        except TypeError:
            return _NO_ROWS
