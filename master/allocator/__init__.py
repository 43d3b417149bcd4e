"""The pure allocator: no I/O, no asyncio, no clock (time is passed in)."""

from corral.master.allocator.allocator import Allocation, Allocator
from corral.master.allocator.sorter import DRFSorter, Sorter

__all__ = ["Allocation", "Allocator", "DRFSorter", "Sorter"]
