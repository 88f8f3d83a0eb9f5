"""Where a node keeps its hard state and log: in memory, or durably on local disk."""

from ._file import FileStorage
from ._memory import MemoryStorage
from ._protocol import Storage

__all__ = ["FileStorage", "MemoryStorage", "Storage"]
