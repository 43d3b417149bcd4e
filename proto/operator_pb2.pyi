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
    __slots__ = ("agent_info", "connected", "total", "allocated", "offered", "registered_time", "last_heartbeat", "task_count", "draining")
    AGENT_INFO_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    ALLOCATED_FIELD_NUMBER: _ClassVar[int]
    OFFERED_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_TIME_FIELD_NUMBER: _ClassVar[int]
    LAST_HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    TASK_COUNT_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    agent_info: _messages_pb2.AgentInfo
    connected: bool
    total: _containers.RepeatedCompositeFieldContainer[_messages_pb2.Resource]
    allocated: _containers.RepeatedCompositeFieldContainer[_messages_pb2.Resource]
    offered: _containers.RepeatedCompositeFieldContainer[_messages_pb2.Resource]
    registered_time: float
    last_heartbeat: float
    task_count: int
    draining: bool
    def __init__(self, agent_info: _Optional[_Union[_messages_pb2.AgentInfo, _Mapping]] = ..., connected: _Optional[bool] = ..., total: _Optional[_Iterable[_Union[_messages_pb2.Resource, _Mapping]]] = ..., allocated: _Optional[_Iterable[_Union[_messages_pb2.Resource, _Mapping]]] = ..., offered: _Optional[_Iterable[_Union[_messages_pb2.Resource, _Mapping]]] = ..., registered_time: _Optional[float] = ..., last_heartbeat: _Optional[float] = ..., task_count: _Optional[int] = ..., draining: _Optional[bool] = ...) -> None: ...

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

class ExecTaskRequest(_message.Message):
    __slots__ = ("task_id", "framework_id", "argv", "timeout_s", "stdin", "tty", "rows", "cols")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    FRAMEWORK_ID_FIELD_NUMBER: _ClassVar[int]
    ARGV_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    STDIN_FIELD_NUMBER: _ClassVar[int]
    TTY_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    COLS_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    framework_id: str
    argv: _containers.RepeatedScalarFieldContainer[str]
    timeout_s: float
    stdin: bool
    tty: bool
    rows: int
    cols: int
    def __init__(self, task_id: _Optional[str] = ..., framework_id: _Optional[str] = ..., argv: _Optional[_Iterable[str]] = ..., timeout_s: _Optional[float] = ..., stdin: _Optional[bool] = ..., tty: _Optional[bool] = ..., rows: _Optional[int] = ..., cols: _Optional[int] = ...) -> None: ...

class ExecTaskInput(_message.Message):
    __slots__ = ("start", "stdin", "stdin_eof", "rows", "cols")
    START_FIELD_NUMBER: _ClassVar[int]
    STDIN_FIELD_NUMBER: _ClassVar[int]
    STDIN_EOF_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    COLS_FIELD_NUMBER: _ClassVar[int]
    start: ExecTaskRequest
    stdin: bytes
    stdin_eof: bool
    rows: int
    cols: int
    def __init__(self, start: _Optional[_Union[ExecTaskRequest, _Mapping]] = ..., stdin: _Optional[bytes] = ..., stdin_eof: _Optional[bool] = ..., rows: _Optional[int] = ..., cols: _Optional[int] = ...) -> None: ...

class ExecTaskResponse(_message.Message):
    __slots__ = ("output", "done", "exit_code", "agent_id")
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    output: bytes
    done: bool
    exit_code: int
    agent_id: str
    def __init__(self, output: _Optional[bytes] = ..., done: _Optional[bool] = ..., exit_code: _Optional[int] = ..., agent_id: _Optional[str] = ...) -> None: ...

class ExplainRequest(_message.Message):
    __slots__ = ("framework_id",)
    FRAMEWORK_ID_FIELD_NUMBER: _ClassVar[int]
    framework_id: str
    def __init__(self, framework_id: _Optional[str] = ...) -> None: ...

class ExplainReason(_message.Message):
    __slots__ = ("kind", "message", "role", "agents", "until")
    KIND_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    AGENTS_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    kind: str
    message: str
    role: str
    agents: int
    until: float
    def __init__(self, kind: _Optional[str] = ..., message: _Optional[str] = ..., role: _Optional[str] = ..., agents: _Optional[int] = ..., until: _Optional[float] = ...) -> None: ...

class ExplainResponse(_message.Message):
    __slots__ = ("reasons", "roles")
    REASONS_FIELD_NUMBER: _ClassVar[int]
    ROLES_FIELD_NUMBER: _ClassVar[int]
    reasons: _containers.RepeatedCompositeFieldContainer[ExplainReason]
    roles: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, reasons: _Optional[_Iterable[_Union[ExplainReason, _Mapping]]] = ..., roles: _Optional[_Iterable[str]] = ...) -> None: ...

class RoleSummary(_message.Message):
    __slots__ = ("role", "weight", "frameworks", "share", "guarantee", "limit", "has_limit", "consumed")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    FRAMEWORKS_FIELD_NUMBER: _ClassVar[int]
    SHARE_FIELD_NUMBER: _ClassVar[int]
    GUARANTEE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    HAS_LIMIT_FIELD_NUMBER: _ClassVar[int]
    CONSUMED_FIELD_NUMBER: _ClassVar[int]
    role: str
    weight: float
    frameworks: _containers.RepeatedScalarFieldContainer[str]
    share: float
    guarantee: _containers.RepeatedCompositeFieldContainer[_messages_pb2.Resource]
    limit: _containers.RepeatedCompositeFieldContainer[_messages_pb2.Resource]
    has_limit: bool
    consumed: _containers.RepeatedCompositeFieldContainer[_messages_pb2.Resource]
    def __init__(self, role: _Optional[str] = ..., weight: _Optional[float] = ..., frameworks: _Optional[_Iterable[str]] = ..., share: _Optional[float] = ..., guarantee: _Optional[_Iterable[_Union[_messages_pb2.Resource, _Mapping]]] = ..., limit: _Optional[_Iterable[_Union[_messages_pb2.Resource, _Mapping]]] = ..., has_limit: _Optional[bool] = ..., consumed: _Optional[_Iterable[_Union[_messages_pb2.Resource, _Mapping]]] = ...) -> None: ...

class ListRolesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListRolesResponse(_message.Message):
    __slots__ = ("roles",)
    ROLES_FIELD_NUMBER: _ClassVar[int]
    roles: _containers.RepeatedCompositeFieldContainer[RoleSummary]
    def __init__(self, roles: _Optional[_Iterable[_Union[RoleSummary, _Mapping]]] = ...) -> None: ...

class SetWeightsRequest(_message.Message):
    __slots__ = ("weights",)
    class Weight(_message.Message):
        __slots__ = ("role", "weight")
        ROLE_FIELD_NUMBER: _ClassVar[int]
        WEIGHT_FIELD_NUMBER: _ClassVar[int]
        role: str
        weight: float
        def __init__(self, role: _Optional[str] = ..., weight: _Optional[float] = ...) -> None: ...
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    weights: _containers.RepeatedCompositeFieldContainer[SetWeightsRequest.Weight]
    def __init__(self, weights: _Optional[_Iterable[_Union[SetWeightsRequest.Weight, _Mapping]]] = ...) -> None: ...

class SetWeightsResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SetQuotaRequest(_message.Message):
    __slots__ = ("role", "guarantee", "limit", "has_limit", "force")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    GUARANTEE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    HAS_LIMIT_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    role: str
    guarantee: _containers.RepeatedCompositeFieldContainer[_messages_pb2.Resource]
    limit: _containers.RepeatedCompositeFieldContainer[_messages_pb2.Resource]
    has_limit: bool
    force: bool
    def __init__(self, role: _Optional[str] = ..., guarantee: _Optional[_Iterable[_Union[_messages_pb2.Resource, _Mapping]]] = ..., limit: _Optional[_Iterable[_Union[_messages_pb2.Resource, _Mapping]]] = ..., has_limit: _Optional[bool] = ..., force: _Optional[bool] = ...) -> None: ...

class SetQuotaResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DrainAgentRequest(_message.Message):
    __slots__ = ("agent_id", "undo")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    UNDO_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    undo: bool
    def __init__(self, agent_id: _Optional[str] = ..., undo: _Optional[bool] = ...) -> None: ...

class DrainAgentResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReserveResourcesRequest(_message.Message):
    __slots__ = ("agent_id", "resources", "unreserve")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    UNRESERVE_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    resources: _containers.RepeatedCompositeFieldContainer[_messages_pb2.Resource]
    unreserve: bool
    def __init__(self, agent_id: _Optional[str] = ..., resources: _Optional[_Iterable[_Union[_messages_pb2.Resource, _Mapping]]] = ..., unreserve: _Optional[bool] = ...) -> None: ...

class ReserveResourcesResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

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

class AgentMaintenance(_message.Message):
    __slots__ = ("draining", "reservations", "unreachable_since")
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    RESERVATIONS_FIELD_NUMBER: _ClassVar[int]
    UNREACHABLE_SINCE_FIELD_NUMBER: _ClassVar[int]
    draining: bool
    reservations: _containers.RepeatedCompositeFieldContainer[_messages_pb2.Resource]
    unreachable_since: float
    def __init__(self, draining: _Optional[bool] = ..., reservations: _Optional[_Iterable[_Union[_messages_pb2.Resource, _Mapping]]] = ..., unreachable_since: _Optional[float] = ...) -> None: ...
