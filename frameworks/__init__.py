"""The framework SDK: write a scheduler in plain Python.

from corral.frameworks import Scheduler, SchedulerDriver, Task
"""

from corral.errors import ConnectTimeoutError, NotConnectedError, SubscribeError
from corral.frameworks.driver import SchedulerDriver
from corral.frameworks.health import HealthCheck
from corral.frameworks.scheduler import Scheduler
from corral.frameworks.states import Reason, Source, TaskState
from corral.frameworks.types import MasterInfo, Offer, Task, TaskStatus, Volume

__all__ = [
    "ConnectTimeoutError",
    "HealthCheck",
    "MasterInfo",
    "NotConnectedError",
    "Offer",
    "Reason",
    "Scheduler",
    "SchedulerDriver",
    "Source",
    "SubscribeError",
    "Task",
    "TaskState",
    "TaskStatus",
    "Volume",
]
