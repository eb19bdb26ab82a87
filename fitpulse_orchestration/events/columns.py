r"""Vectorised checks on the object columns of parsed JSON records.

A landed record's fields keep the JSON value as parsed, so a column can mix strings, numbers,
objects and None (a type error must stay visible to the raw contract). ``RawColumn`` answers
the contract's questions for a whole column at once: through Arrow's kernels when the column
holds only strings (or only ints) and nulls, and value by value in Python only for a column
that mixes types or holds text Arrow cannot encode (lone surrogates from ``\ud800``
escapes). Both paths give the same answer for every value (``tests/unit/events``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from functools import cached_property
from typing import Any, Final

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pandas.api.types import infer_dtype

_TEXT_KINDS: Final = frozenset({"string", "empty"})
_INT_KINDS: Final = frozenset({"integer", "empty"})


def bool_mask(result: pa.Array | pa.ChunkedArray, default: bool) -> np.ndarray:
    """An Arrow boolean result as numpy, nulls (non-strings) as ``default``."""
    return np.asarray(pc.fill_null(result, default).to_numpy(zero_copy_only=False), dtype=bool)


class IdPattern:
    """``pattern.fullmatch`` over a column, through RE2 for ASCII text.

    ``ascii_equivalent`` must match exactly the ASCII strings ``pattern`` matches (RE2's
    classes are ASCII, Python's are Unicode); non-ASCII strings go through ``pattern`` itself.
    """

    def __init__(self, pattern: re.Pattern[str], ascii_equivalent: str) -> None:
        self.pattern = pattern
        self.ascii_equivalent = f"^(?:{ascii_equivalent})$"

    def matches(self, value: str) -> bool:
        """Whether one string fully matches."""
        return self.pattern.fullmatch(value) is not None


class RawColumn:
    """One field of the parsed records, with the contract's vectorised questions."""

    def __init__(self, values: pd.Series) -> None:
        self.values = values.to_numpy(dtype=object)
        # JSON gives None for null and never NaN (non-finite numbers are refused at parsing),
        # so type inference that skips missing values skips exactly the nulls.
        self.kind = str(infer_dtype(self.values, skipna=True))

    def _each(self, test: Callable[[Any], bool]) -> np.ndarray:
        return np.fromiter((test(v) for v in self.values), dtype=bool, count=len(self.values))

    @cached_property
    def null(self) -> np.ndarray:
        """Where the value is JSON null (or the field is absent)."""
        return pd.isna(self.values)

    @cached_property
    def text(self) -> pa.Array | None:
        """The column as Arrow strings, null where the value is not a str.

        None when a string cannot be encoded as UTF-8: the callers then go value by value.
        """
        try:
            if self.kind in _TEXT_KINDS:
                return pa.array(self.values, type=pa.string(), from_pandas=True)
            return pa.array(
                [v if isinstance(v, str) else None for v in self.values], type=pa.string()
            )
        except (UnicodeEncodeError, pa.ArrowInvalid):
            return None

    @cached_property
    def is_str(self) -> np.ndarray:
        """Where the value is a str."""
        if self.kind in _TEXT_KINDS:
            return ~self.null
        return self._each(lambda v: isinstance(v, str))

    @cached_property
    def is_int(self) -> np.ndarray:
        """Where the value is an int (``bool`` is not one)."""
        if self.kind in _INT_KINDS:
            return ~self.null
        return self._each(lambda v: isinstance(v, int) and not isinstance(v, bool))

    def is_dict(self) -> np.ndarray:
        """Where the value is an object."""
        return self._each(lambda v: isinstance(v, dict))

    def is_empty_str(self) -> np.ndarray:
        """Where the value is ``""``."""
        if self.text is None:
            return self._each(lambda v: v == "" and isinstance(v, str))
        return bool_mask(pc.equal(pc.binary_length(self.text), 0), False)

    def mismatches(self, pattern: IdPattern) -> np.ndarray:
        """Where the value is a non-empty str that does not fully match ``pattern``."""
        if self.text is None:
            return self._each(lambda v: isinstance(v, str) and v != "" and not pattern.matches(v))
        matched = bool_mask(pc.match_substring_regex(self.text, pattern.ascii_equivalent), True)
        non_ascii = np.flatnonzero(~bool_mask(pc.string_is_ascii(self.text), True))
        matched[non_ascii] = [pattern.matches(self.values[i]) for i in non_ascii]
        return ~matched & ~self.is_empty_str()

    def in_set(self, allowed: Iterable[str]) -> np.ndarray:
        """Where the value is a str in ``allowed``."""
        wanted = sorted(set(allowed))
        if self.text is None:
            return self._each(lambda v: isinstance(v, str) and v in wanted)
        return bool_mask(pc.is_in(self.text, value_set=pa.array(wanted, type=pa.string())), False)

    def int_test(self, test: Callable[[np.ndarray], Any]) -> np.ndarray:
        """Where the value is an int that fails ``test`` (given an object array of ints)."""
        bad = np.zeros(len(self.values), dtype=bool)
        ints = self.is_int
        if ints.any():
            bad[ints] = ~np.asarray(test(self.values[ints]), dtype=bool)
        return bad
