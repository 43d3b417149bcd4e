from corral.proto import messages_pb2 as _messages_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AgentMessage(_message.Message):
    __slots__ = ("register", "heartbeat", "status_updates", "file_data", "usage", "exec_output")
    class Register(_message.Message):
        __slots__ = ("agent_info", "tasks", "frameworks", "task_infos")
        AGENT_INFO_FIELD_NUMBER: _ClassVar[int]
        TASKS_FIELD_NUMBER: _ClassVar[int]
        FRAMEWORKS_FIELD_NUMBER: _ClassVar[int]
        TASK_INFOS_FIELD_NUMBER: _ClassVar[int]
        agent_info: _messages_pb2.AgentInfo
        tasks: _containers.RepeatedCompositeFieldContainer[_messages_pb2.TaskStatus]
        frameworks: _containers.RepeatedCompositeFieldContainer[_messages_pb2.FrameworkInfo]
        task_infos: _containers.RepeatedCompositeFieldContainer[_messages_pb2.TaskInfo]
        def __init__(self, agent_info: _Optional[_Union[_messages_pb2.AgentInfo, _Mapping]] = ..., tasks: _Optional[_Iterable[_Union[_messages_pb2.TaskStatus, _Mapping]]] = ..., frameworks: _Optional[_Iterable[_Union[_messages_pb2.FrameworkInfo, _Mapping]]] = ..., task_infos: _Optional[_Iterable[_Union[_messages_pb2.TaskInfo, _Mapping]]] = ...) -> None: ...
    class Heartbeat(_message.Message):
        __slots__ = ("timestamp",)
        TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
        timestamp: float
        def __init__(self, timestamp: _Optional[float] = ...) -> None: ...
    class StatusUpdates(_message.Message):
        __slots__ = ("statuses",)
        STATUSES_FIELD_NUMBER: _ClassVar[int]
        statuses: _containers.RepeatedCompositeFieldContainer[_messages_pb2.TaskStatus]
        def __init__(self, statuses: _Optional[_Iterable[_Union[_messages_pb2.TaskStatus, _Mapping]]] = ...) -> None: ...
    class FileData(_message.Message):
        __slots__ = ("request_id", "data", "size", "error")
        REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
        DATA_FIELD_NUMBER: _ClassVar[int]
        SIZE_FIELD_NUMBER: _ClassVar[int]
        ERROR_FIELD_NUMBER: _ClassVar[int]
        request_id: int
        data: bytes
        size: int
        error: str
        def __init__(self, request_id: _Optional[int] = ..., data: _Optional[bytes] = ..., size: _Optional[int] = ..., error: _Optional[str] = ...) -> None: ...
    class Usage(_message.Message):
        __slots__ = ("request_id", "tasks")
        REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
        TASKS_FIELD_NUMBER: _ClassVar[int]
        request_id: int
        tasks: _containers.RepeatedCompositeFieldContainer[_messages_pb2.TaskUsage]
        def __init__(self, request_id: _Optional[int] = ..., tasks: _Optional[_Iterable[_Union[_messages_pb2.TaskUsage, _Mapping]]] = ...) -> None: ...
    class ExecOutput(_message.Message):
        __slots__ = ("request_id", "data", "done", "exit_code", "error")
        REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
        DATA_FIELD_NUMBER: _ClassVar[int]
        DONE_FIELD_NUMBER: _ClassVar[int]
        EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
        ERROR_FIELD_NUMBER: _ClassVar[int]
        request_id: int
        data: bytes
        done: bool
        exit_code: int
        error: str
        def __init__(self, request_id: _Optional[int] = ..., data: _Optional[bytes] = ..., done: _Optional[bool] = ..., exit_code: _Optional[int] = ..., error: _Optional[str] = ...) -> None: ...
    REGISTER_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    STATUS_UPDATES_FIELD_NUMBER: _ClassVar[int]
    FILE_DATA_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    EXEC_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    register: AgentMessage.Register
    heartbeat: AgentMessage.Heartbeat
    status_updates: AgentMessage.StatusUpdates
    file_data: AgentMessage.FileData
    usage: AgentMessage.Usage
    exec_output: AgentMessage.ExecOutput
    def __init__(self, register: _Optional[_Union[AgentMessage.Register, _Mapping]] = ..., heartbeat: _Optional[_Union[AgentMessage.Heartbeat, _Mapping]] = ..., status_updates: _Optional[_Union[AgentMessage.StatusUpdates, _Mapping]] = ..., file_data: _Optional[_Union[AgentMessage.FileData, _Mapping]] = ..., usage: _Optional[_Union[AgentMessage.Usage, _Mapping]] = ..., exec_output: _Optional[_Union[AgentMessage.ExecOutput, _Mapping]] = ...) -> None: ...

class MasterMessage(_message.Message):
    __slots__ = ("registered", "run_tasks", "kill_task", "acknowledgements", "shutdown_framework", "read_file", "error", "get_usage", "exec", "cancel_exec", "exec_input")
    class Registered(_message.Message):
        __slots__ = ("agent_id", "heartbeat_interval_s", "master_info")
        AGENT_ID_FIELD_NUMBER: _ClassVar[int]
        HEARTBEAT_INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
        MASTER_INFO_FIELD_NUMBER: _ClassVar[int]
        agent_id: str
        heartbeat_interval_s: float
        master_info: _messages_pb2.MasterInfo
        def __init__(self, agent_id: _Optional[str] = ..., heartbeat_interval_s: _Optional[float] = ..., master_info: _Optional[_Union[_messages_pb2.MasterInfo, _Mapping]] = ...) -> None: ...
    class RunTasks(_message.Message):
        __slots__ = ("framework_info", "tasks")
        FRAMEWORK_INFO_FIELD_NUMBER: _ClassVar[int]
        TASKS_FIELD_NUMBER: _ClassVar[int]
        framework_info: _messages_pb2.FrameworkInfo
        tasks: _containers.RepeatedCompositeFieldContainer[_messages_pb2.TaskInfo]
        def __init__(self, framework_info: _Optional[_Union[_messages_pb2.FrameworkInfo, _Mapping]] = ..., tasks: _Optional[_Iterable[_Union[_messages_pb2.TaskInfo, _Mapping]]] = ...) -> None: ...
    class KillTask(_message.Message):
        __slots__ = ("framework_id", "task_id", "grace_period_s")
        FRAMEWORK_ID_FIELD_NUMBER: _ClassVar[int]
        TASK_ID_FIELD_NUMBER: _ClassVar[int]
        GRACE_PERIOD_S_FIELD_NUMBER: _ClassVar[int]
        framework_id: str
        task_id: str
        grace_period_s: float
        def __init__(self, framework_id: _Optional[str] = ..., task_id: _Optional[str] = ..., grace_period_s: _Optional[float] = ...) -> None: ...
    class Acknowledgements(_message.Message):
        __slots__ = ("acks",)
        class Ack(_message.Message):
            __slots__ = ("task_id", "uuid", "framework_id")
            TASK_ID_FIELD_NUMBER: _ClassVar[int]
            UUID_FIELD_NUMBER: _ClassVar[int]
            FRAMEWORK_ID_FIELD_NUMBER: _ClassVar[int]
            task_id: str
            uuid: bytes
            framework_id: str
            def __init__(self, task_id: _Optional[str] = ..., uuid: _Optional[bytes] = ..., framework_id: _Optional[str] = ...) -> None: ...
        ACKS_FIELD_NUMBER: _ClassVar[int]
        acks: _containers.RepeatedCompositeFieldContainer[MasterMessage.Acknowledgements.Ack]
        def __init__(self, acks: _Optional[_Iterable[_Union[MasterMessage.Acknowledgements.Ack, _Mapping]]] = ...) -> None: ...
    class ShutdownFramework(_message.Message):
        __slots__ = ("framework_id",)
        FRAMEWORK_ID_FIELD_NUMBER: _ClassVar[int]
        framework_id: str
        def __init__(self, framework_id: _Optional[str] = ...) -> None: ...
    class ReadFile(_message.Message):
        __slots__ = ("request_id", "task_id", "path", "offset", "length")
        REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
        TASK_ID_FIELD_NUMBER: _ClassVar[int]
        PATH_FIELD_NUMBER: _ClassVar[int]
        OFFSET_FIELD_NUMBER: _ClassVar[int]
        LENGTH_FIELD_NUMBER: _ClassVar[int]
        request_id: int
        task_id: str
        path: str
        offset: int
        length: int
        def __init__(self, request_id: _Optional[int] = ..., task_id: _Optional[str] = ..., path: _Optional[str] = ..., offset: _Optional[int] = ..., length: _Optional[int] = ...) -> None: ...
    class Error(_message.Message):
        __slots__ = ("message", "code")
        MESSAGE_FIELD_NUMBER: _ClassVar[int]
        CODE_FIELD_NUMBER: _ClassVar[int]
        message: str
        code: str
        def __init__(self, message: _Optional[str] = ..., code: _Optional[str] = ...) -> None: ...
    class GetUsage(_message.Message):
        __slots__ = ("request_id", "task_ids")
        REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
        TASK_IDS_FIELD_NUMBER: _ClassVar[int]
        request_id: int
        task_ids: _containers.RepeatedScalarFieldContainer[str]
        def __init__(self, request_id: _Optional[int] = ..., task_ids: _Optional[_Iterable[str]] = ...) -> None: ...
    class Exec(_message.Message):
        __slots__ = ("request_id", "task_id", "argv", "timeout_s", "stdin", "tty", "rows", "cols")
        REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
        TASK_ID_FIELD_NUMBER: _ClassVar[int]
        ARGV_FIELD_NUMBER: _ClassVar[int]
        TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
        STDIN_FIELD_NUMBER: _ClassVar[int]
        TTY_FIELD_NUMBER: _ClassVar[int]
        ROWS_FIELD_NUMBER: _ClassVar[int]
        COLS_FIELD_NUMBER: _ClassVar[int]
        request_id: int
        task_id: str
        argv: _containers.RepeatedScalarFieldContainer[str]
        timeout_s: float
        stdin: bool
        tty: bool
        rows: int
        cols: int
        def __init__(self, request_id: _Optional[int] = ..., task_id: _Optional[str] = ..., argv: _Optional[_Iterable[str]] = ..., timeout_s: _Optional[float] = ..., stdin: _Optional[bool] = ..., tty: _Optional[bool] = ..., rows: _Optional[int] = ..., cols: _Optional[int] = ...) -> None: ...
    class ExecInput(_message.Message):
        __slots__ = ("request_id", "data", "eof", "rows", "cols")
        REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
        DATA_FIELD_NUMBER: _ClassVar[int]
        EOF_FIELD_NUMBER: _ClassVar[int]
        ROWS_FIELD_NUMBER: _ClassVar[int]
        COLS_FIELD_NUMBER: _ClassVar[int]
        request_id: int
        data: bytes
        eof: bool
        rows: int
        cols: int
        def __init__(self, request_id: _Optional[int] = ..., data: _Optional[bytes] = ..., eof: _Optional[bool] = ..., rows: _Optional[int] = ..., cols: _Optional[int] = ...) -> None: ...
    class CancelExec(_message.Message):
        __slots__ = ("request_id",)
        REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
        request_id: int
        def __init__(self, request_id: _Optional[int] = ...) -> None: ...
    REGISTERED_FIELD_NUMBER: _ClassVar[int]
    RUN_TASKS_FIELD_NUMBER: _ClassVar[int]
    KILL_TASK_FIELD_NUMBER: _ClassVar[int]
    ACKNOWLEDGEMENTS_FIELD_NUMBER: _ClassVar[int]
    SHUTDOWN_FRAMEWORK_FIELD_NUMBER: _ClassVar[int]
    READ_FILE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    GET_USAGE_FIELD_NUMBER: _ClassVar[int]
    EXEC_FIELD_NUMBER: _ClassVar[int]
    CANCEL_EXEC_FIELD_NUMBER: _ClassVar[int]
    EXEC_INPUT_FIELD_NUMBER: _ClassVar[int]
    registered: MasterMessage.Registered
    run_tasks: MasterMessage.RunTasks
    kill_task: MasterMessage.KillTask
    acknowledgements: MasterMessage.Acknowledgements
    shutdown_framework: MasterMessage.ShutdownFramework
    read_file: MasterMessage.ReadFile
    error: MasterMessage.Error
    get_usage: MasterMessage.GetUsage
    exec: MasterMessage.Exec
    cancel_exec: MasterMessage.CancelExec
    exec_input: MasterMessage.ExecInput
    def __init__(self, registered: _Optional[_Union[MasterMessage.Registered, _Mapping]] = ..., run_tasks: _Optional[_Union[MasterMessage.RunTasks, _Mapping]] = ..., kill_task: _Optional[_Union[MasterMessage.KillTask, _Mapping]] = ..., acknowledgements: _Optional[_Union[MasterMessage.Acknowledgements, _Mapping]] = ..., shutdown_framework: _Optional[_Union[MasterMessage.ShutdownFramework, _Mapping]] = ..., read_file: _Optional[_Union[MasterMessage.ReadFile, _Mapping]] = ..., error: _Optional[_Union[MasterMessage.Error, _Mapping]] = ..., get_usage: _Optional[_Union[MasterMessage.GetUsage, _Mapping]] = ..., exec: _Optional[_Union[MasterMessage.Exec, _Mapping]] = ..., cancel_exec: _Optional[_Union[MasterMessage.CancelExec, _Mapping]] = ..., exec_input: _Optional[_Union[MasterMessage.ExecInput, _Mapping]] = ...) -> None: ...
