"""The framework SDK: write a scheduler in plain Python.

from corral.frameworks import Scheduler, SchedulerDriver, Task
"""

from corral.errors import NotConnectedError, SubscribeError
from corral.frameworks.driver import SchedulerDriver
from corral.frameworks.health import HealthCheck
from corral.frameworks.scheduler import Scheduler
from corral.frameworks.types import MasterInfo, Offer, Task, TaskState, TaskStatus, Volume

__all__ = [
    "HealthCheck",
    "MasterInfo",
    "NotConnectedError",
    "Offer",
    "Scheduler",
    "SchedulerDriver",
    "SubscribeError",
    "Task",
    "TaskState",
    "TaskStatus",
    "Volume",
]
