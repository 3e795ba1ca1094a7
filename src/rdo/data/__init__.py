"""Preference data: row formats -> canonical records -> token ids -> batches."""

from rdo.data.errors import DataError, SkipReport
from rdo.data.load import Loaded, load_records

__all__ = ["DataError", "Loaded", "SkipReport", "load_records"]
