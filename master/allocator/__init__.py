"""The pure allocator: no I/O, no asyncio, no clock (time is passed in)."""

from corral.master.allocator.allocator import Allocation, Allocator, AllocatorError, Reason, RoleInfo
from corral.master.allocator.sorter import DRFSorter, RoleSorter, Sorter

__all__ = [
    "Allocation",
    "Allocator",
    "AllocatorError",
    "DRFSorter",
    "Reason",
    "RoleInfo",
    "RoleSorter",
    "Sorter",
]
