from corral.proto import messages_pb2 as _messages_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetMasterInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetMasterInfoResponse(_message.Message):
    __slots__ = ("master_info", "leading")
    MASTER_INFO_FIELD_NUMBER: _ClassVar[int]
    LEADING_FIELD_NUMBER: _ClassVar[int]
    master_info: _messages_pb2.MasterInfo
    leading: bool
    def __init__(self, master_info: _Optional[_Union[_messages_pb2.MasterInfo, _Mapping]] = ..., leading: _Optional[bool] = ...) -> None: ...

class AgentSummary(_message.Message):
    __slots__ = ("agent_info", "connected", "total", "allocated", "offered", "registered_time", "last_heartbeat", "task_count")
    AGENT_INFO_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    ALLOCATED_FIELD_NUMBER: _ClassVar[int]
    OFFERED_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_TIME_FIELD_NUMBER: _ClassVar[int]
    LAST_HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    TASK_COUNT_FIELD_NUMBER: _ClassVar[int]
    agent_info: _messages_pb2.AgentInfo
    connected: bool
    total: _containers.RepeatedCompositeFieldContainer[_messages_pb2.Resource]
    allocated: _containers.RepeatedCompositeFieldContainer[_messages_pb2.Resource]
    offered: _containers.RepeatedCompositeFieldContainer[_messages_pb2.Resource]
    registered_time: float
    last_heartbeat: float
    task_count: int
    def __init__(self, agent_info: _Optional[_Union[_messages_pb2.AgentInfo, _Mapping]] = ..., connected: _Optional[bool] = ..., total: _Optional[_Iterable[_Union[_messages_pb2.Resource, _Mapping]]] = ..., allocated: _Optional[_Iterable[_Union[_messages_pb2.Resource, _Mapping]]] = ..., offered: _Optional[_Iterable[_Union[_messages_pb2.Resource, _Mapping]]] = ..., registered_time: _Optional[float] = ..., last_heartbeat: _Optional[float] = ..., task_count: _Optional[int] = ...) -> None: ...

class ListAgentsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListAgentsResponse(_message.Message):
    __slots__ = ("agents",)
    AGENTS_FIELD_NUMBER: _ClassVar[int]
    agents: _containers.RepeatedCompositeFieldContainer[AgentSummary]
    def __init__(self, agents: _Optional[_Iterable[_Union[AgentSummary, _Mapping]]] = ...) -> None: ...

class FrameworkSummary(_message.Message):
    __slots__ = ("framework_info", "connected", "active", "allocated", "offered", "task_count", "registered_time")
    FRAMEWORK_INFO_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    ALLOCATED_FIELD_NUMBER: _ClassVar[int]
    OFFERED_FIELD_NUMBER: _ClassVar[int]
    TASK_COUNT_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_TIME_FIELD_NUMBER: _ClassVar[int]
    framework_info: _messages_pb2.FrameworkInfo
    connected: bool
    active: bool
    allocated: _containers.RepeatedCompositeFieldContainer[_messages_pb2.Resource]
    offered: _containers.RepeatedCompositeFieldContainer[_messages_pb2.Resource]
    task_count: int
    registered_time: float
    def __init__(self, framework_info: _Optional[_Union[_messages_pb2.FrameworkInfo, _Mapping]] = ..., connected: _Optional[bool] = ..., active: _Optional[bool] = ..., allocated: _Optional[_Iterable[_Union[_messages_pb2.Resource, _Mapping]]] = ..., offered: _Optional[_Iterable[_Union[_messages_pb2.Resource, _Mapping]]] = ..., task_count: _Optional[int] = ..., registered_time: _Optional[float] = ...) -> None: ...

class ListFrameworksRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListFrameworksResponse(_message.Message):
    __slots__ = ("frameworks",)
    FRAMEWORKS_FIELD_NUMBER: _ClassVar[int]
    frameworks: _containers.RepeatedCompositeFieldContainer[FrameworkSummary]
    def __init__(self, frameworks: _Optional[_Iterable[_Union[FrameworkSummary, _Mapping]]] = ...) -> None: ...

class TaskSummary(_message.Message):
    __slots__ = ("task_info", "framework_id", "status", "launched_time")
    TASK_INFO_FIELD_NUMBER: _ClassVar[int]
    FRAMEWORK_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    LAUNCHED_TIME_FIELD_NUMBER: _ClassVar[int]
    task_info: _messages_pb2.TaskInfo
    framework_id: str
    status: _messages_pb2.TaskStatus
    launched_time: float
    def __init__(self, task_info: _Optional[_Union[_messages_pb2.TaskInfo, _Mapping]] = ..., framework_id: _Optional[str] = ..., status: _Optional[_Union[_messages_pb2.TaskStatus, _Mapping]] = ..., launched_time: _Optional[float] = ...) -> None: ...

class ListTasksRequest(_message.Message):
    __slots__ = ("framework_id", "include_completed")
    FRAMEWORK_ID_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_COMPLETED_FIELD_NUMBER: _ClassVar[int]
    framework_id: str
    include_completed: bool
    def __init__(self, framework_id: _Optional[str] = ..., include_completed: _Optional[bool] = ...) -> None: ...

class ListTasksResponse(_message.Message):
    __slots__ = ("tasks",)
    TASKS_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[TaskSummary]
    def __init__(self, tasks: _Optional[_Iterable[_Union[TaskSummary, _Mapping]]] = ...) -> None: ...

class KillTaskRequest(_message.Message):
    __slots__ = ("task_id", "framework_id")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    FRAMEWORK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    framework_id: str
    def __init__(self, task_id: _Optional[str] = ..., framework_id: _Optional[str] = ...) -> None: ...

class KillTaskResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TeardownRequest(_message.Message):
    __slots__ = ("framework_id",)
    FRAMEWORK_ID_FIELD_NUMBER: _ClassVar[int]
    framework_id: str
    def __init__(self, framework_id: _Optional[str] = ...) -> None: ...

class TeardownResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReadFileRequest(_message.Message):
    __slots__ = ("task_id", "framework_id", "path", "offset", "length")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    FRAMEWORK_ID_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    framework_id: str
    path: str
    offset: int
    length: int
    def __init__(self, task_id: _Optional[str] = ..., framework_id: _Optional[str] = ..., path: _Optional[str] = ..., offset: _Optional[int] = ..., length: _Optional[int] = ...) -> None: ...

class ReadFileResponse(_message.Message):
    __slots__ = ("data", "size", "status")
    DATA_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    size: int
    status: _messages_pb2.TaskStatus
    def __init__(self, data: _Optional[bytes] = ..., size: _Optional[int] = ..., status: _Optional[_Union[_messages_pb2.TaskStatus, _Mapping]] = ...) -> None: ...

class GetUsageRequest(_message.Message):
    __slots__ = ("agent_id", "framework_id", "task_id")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    FRAMEWORK_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    framework_id: str
    task_id: str
    def __init__(self, agent_id: _Optional[str] = ..., framework_id: _Optional[str] = ..., task_id: _Optional[str] = ...) -> None: ...

class GetUsageResponse(_message.Message):
    __slots__ = ("usages", "errors")
    USAGES_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    usages: _containers.RepeatedCompositeFieldContainer[_messages_pb2.TaskUsage]
    errors: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, usages: _Optional[_Iterable[_Union[_messages_pb2.TaskUsage, _Mapping]]] = ..., errors: _Optional[_Iterable[str]] = ...) -> None: ...
