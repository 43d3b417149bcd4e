from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TaskState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_STATE_UNSPECIFIED: _ClassVar[TaskState]
    TASK_STAGING: _ClassVar[TaskState]
    TASK_STARTING: _ClassVar[TaskState]
    TASK_RUNNING: _ClassVar[TaskState]
    TASK_KILLING: _ClassVar[TaskState]
    TASK_FINISHED: _ClassVar[TaskState]
    TASK_FAILED: _ClassVar[TaskState]
    TASK_KILLED: _ClassVar[TaskState]
    TASK_ERROR: _ClassVar[TaskState]
    TASK_LOST: _ClassVar[TaskState]
    TASK_DROPPED: _ClassVar[TaskState]
    TASK_UNREACHABLE: _ClassVar[TaskState]
    TASK_GONE: _ClassVar[TaskState]
    TASK_GONE_BY_OPERATOR: _ClassVar[TaskState]
    TASK_UNKNOWN: _ClassVar[TaskState]
TASK_STATE_UNSPECIFIED: TaskState
TASK_STAGING: TaskState
TASK_STARTING: TaskState
TASK_RUNNING: TaskState
TASK_KILLING: TaskState
TASK_FINISHED: TaskState
TASK_FAILED: TaskState
TASK_KILLED: TaskState
TASK_ERROR: TaskState
TASK_LOST: TaskState
TASK_DROPPED: TaskState
TASK_UNREACHABLE: TaskState
TASK_GONE: TaskState
TASK_GONE_BY_OPERATOR: TaskState
TASK_UNKNOWN: TaskState

class Value(_message.Message):
    __slots__ = ()
    class Range(_message.Message):
        __slots__ = ("begin", "end")
        BEGIN_FIELD_NUMBER: _ClassVar[int]
        END_FIELD_NUMBER: _ClassVar[int]
        begin: int
        end: int
        def __init__(self, begin: _Optional[int] = ..., end: _Optional[int] = ...) -> None: ...
    class Ranges(_message.Message):
        __slots__ = ("range",)
        RANGE_FIELD_NUMBER: _ClassVar[int]
        range: _containers.RepeatedCompositeFieldContainer[Value.Range]
        def __init__(self, range: _Optional[_Iterable[_Union[Value.Range, _Mapping]]] = ...) -> None: ...
    class Set(_message.Message):
        __slots__ = ("item",)
        ITEM_FIELD_NUMBER: _ClassVar[int]
        item: _containers.RepeatedScalarFieldContainer[str]
        def __init__(self, item: _Optional[_Iterable[str]] = ...) -> None: ...
    def __init__(self) -> None: ...

class Resource(_message.Message):
    __slots__ = ("name", "scalar", "ranges", "set", "role")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SCALAR_FIELD_NUMBER: _ClassVar[int]
    RANGES_FIELD_NUMBER: _ClassVar[int]
    SET_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    name: str
    scalar: float
    ranges: Value.Ranges
    set: Value.Set
    role: str
    def __init__(self, name: _Optional[str] = ..., scalar: _Optional[float] = ..., ranges: _Optional[_Union[Value.Ranges, _Mapping]] = ..., set: _Optional[_Union[Value.Set, _Mapping]] = ..., role: _Optional[str] = ...) -> None: ...

class Attribute(_message.Message):
    __slots__ = ("name", "value")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: str
    def __init__(self, name: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class MasterInfo(_message.Message):
    __slots__ = ("id", "address", "hostname", "version", "start_time")
    ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    id: str
    address: str
    hostname: str
    version: str
    start_time: float
    def __init__(self, id: _Optional[str] = ..., address: _Optional[str] = ..., hostname: _Optional[str] = ..., version: _Optional[str] = ..., start_time: _Optional[float] = ...) -> None: ...

class AgentInfo(_message.Message):
    __slots__ = ("id", "hostname", "resources", "attributes", "work_dir", "version", "principal")
    ID_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    WORK_DIR_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    id: str
    hostname: str
    resources: _containers.RepeatedCompositeFieldContainer[Resource]
    attributes: _containers.RepeatedCompositeFieldContainer[Attribute]
    work_dir: str
    version: str
    principal: str
    def __init__(self, id: _Optional[str] = ..., hostname: _Optional[str] = ..., resources: _Optional[_Iterable[_Union[Resource, _Mapping]]] = ..., attributes: _Optional[_Iterable[_Union[Attribute, _Mapping]]] = ..., work_dir: _Optional[str] = ..., version: _Optional[str] = ..., principal: _Optional[str] = ...) -> None: ...

class FrameworkInfo(_message.Message):
    __slots__ = ("id", "name", "user", "roles", "failover_timeout_s", "capabilities", "principal", "hostname")
    class Capability(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        CAPABILITY_UNSPECIFIED: _ClassVar[FrameworkInfo.Capability]
        PARTITION_AWARE: _ClassVar[FrameworkInfo.Capability]
        MULTI_ROLE: _ClassVar[FrameworkInfo.Capability]
        TASK_KILLING_STATE: _ClassVar[FrameworkInfo.Capability]
    CAPABILITY_UNSPECIFIED: FrameworkInfo.Capability
    PARTITION_AWARE: FrameworkInfo.Capability
    MULTI_ROLE: FrameworkInfo.Capability
    TASK_KILLING_STATE: FrameworkInfo.Capability
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    ROLES_FIELD_NUMBER: _ClassVar[int]
    FAILOVER_TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    user: str
    roles: _containers.RepeatedScalarFieldContainer[str]
    failover_timeout_s: float
    capabilities: _containers.RepeatedScalarFieldContainer[FrameworkInfo.Capability]
    principal: str
    hostname: str
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., user: _Optional[str] = ..., roles: _Optional[_Iterable[str]] = ..., failover_timeout_s: _Optional[float] = ..., capabilities: _Optional[_Iterable[_Union[FrameworkInfo.Capability, str]]] = ..., principal: _Optional[str] = ..., hostname: _Optional[str] = ...) -> None: ...

class Filters(_message.Message):
    __slots__ = ("refuse_seconds",)
    REFUSE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    refuse_seconds: float
    def __init__(self, refuse_seconds: _Optional[float] = ...) -> None: ...

class Offer(_message.Message):
    __slots__ = ("id", "framework_id", "agent_id", "hostname", "resources", "attributes", "role")
    ID_FIELD_NUMBER: _ClassVar[int]
    FRAMEWORK_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    id: str
    framework_id: str
    agent_id: str
    hostname: str
    resources: _containers.RepeatedCompositeFieldContainer[Resource]
    attributes: _containers.RepeatedCompositeFieldContainer[Attribute]
    role: str
    def __init__(self, id: _Optional[str] = ..., framework_id: _Optional[str] = ..., agent_id: _Optional[str] = ..., hostname: _Optional[str] = ..., resources: _Optional[_Iterable[_Union[Resource, _Mapping]]] = ..., attributes: _Optional[_Iterable[_Union[Attribute, _Mapping]]] = ..., role: _Optional[str] = ...) -> None: ...

class CommandInfo(_message.Message):
    __slots__ = ("shell", "value", "arguments", "environment", "user")
    class EnvironmentEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SHELL_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    shell: bool
    value: str
    arguments: _containers.RepeatedScalarFieldContainer[str]
    environment: _containers.ScalarMap[str, str]
    user: str
    def __init__(self, shell: _Optional[bool] = ..., value: _Optional[str] = ..., arguments: _Optional[_Iterable[str]] = ..., environment: _Optional[_Mapping[str, str]] = ..., user: _Optional[str] = ...) -> None: ...

class ContainerInfo(_message.Message):
    __slots__ = ("image", "hostname", "network", "uid", "gid", "volumes", "read_only_root", "seccomp_profile", "devices", "user_namespace", "pull_policy")
    class NetworkMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        NETWORK_UNSPECIFIED: _ClassVar[ContainerInfo.NetworkMode]
        HOST: _ClassVar[ContainerInfo.NetworkMode]
        NONE: _ClassVar[ContainerInfo.NetworkMode]
        BRIDGE: _ClassVar[ContainerInfo.NetworkMode]
    NETWORK_UNSPECIFIED: ContainerInfo.NetworkMode
    HOST: ContainerInfo.NetworkMode
    NONE: ContainerInfo.NetworkMode
    BRIDGE: ContainerInfo.NetworkMode
    class PullPolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        PULL_POLICY_UNSPECIFIED: _ClassVar[ContainerInfo.PullPolicy]
        IF_NOT_PRESENT: _ClassVar[ContainerInfo.PullPolicy]
        ALWAYS: _ClassVar[ContainerInfo.PullPolicy]
        NEVER: _ClassVar[ContainerInfo.PullPolicy]
    PULL_POLICY_UNSPECIFIED: ContainerInfo.PullPolicy
    IF_NOT_PRESENT: ContainerInfo.PullPolicy
    ALWAYS: ContainerInfo.PullPolicy
    NEVER: ContainerInfo.PullPolicy
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    GID_FIELD_NUMBER: _ClassVar[int]
    VOLUMES_FIELD_NUMBER: _ClassVar[int]
    READ_ONLY_ROOT_FIELD_NUMBER: _ClassVar[int]
    SECCOMP_PROFILE_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    USER_NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    PULL_POLICY_FIELD_NUMBER: _ClassVar[int]
    image: str
    hostname: str
    network: ContainerInfo.NetworkMode
    uid: int
    gid: int
    volumes: _containers.RepeatedCompositeFieldContainer[Volume]
    read_only_root: bool
    seccomp_profile: str
    devices: _containers.RepeatedScalarFieldContainer[str]
    user_namespace: bool
    pull_policy: ContainerInfo.PullPolicy
    def __init__(self, image: _Optional[str] = ..., hostname: _Optional[str] = ..., network: _Optional[_Union[ContainerInfo.NetworkMode, str]] = ..., uid: _Optional[int] = ..., gid: _Optional[int] = ..., volumes: _Optional[_Iterable[_Union[Volume, _Mapping]]] = ..., read_only_root: _Optional[bool] = ..., seccomp_profile: _Optional[str] = ..., devices: _Optional[_Iterable[str]] = ..., user_namespace: _Optional[bool] = ..., pull_policy: _Optional[_Union[ContainerInfo.PullPolicy, str]] = ...) -> None: ...

class Volume(_message.Message):
    __slots__ = ("container_path", "host_path", "read_only", "tmpfs_size_bytes")
    CONTAINER_PATH_FIELD_NUMBER: _ClassVar[int]
    HOST_PATH_FIELD_NUMBER: _ClassVar[int]
    READ_ONLY_FIELD_NUMBER: _ClassVar[int]
    TMPFS_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    container_path: str
    host_path: str
    read_only: bool
    tmpfs_size_bytes: int
    def __init__(self, container_path: _Optional[str] = ..., host_path: _Optional[str] = ..., read_only: _Optional[bool] = ..., tmpfs_size_bytes: _Optional[int] = ...) -> None: ...

class KillPolicy(_message.Message):
    __slots__ = ("grace_period_s",)
    GRACE_PERIOD_S_FIELD_NUMBER: _ClassVar[int]
    grace_period_s: float
    def __init__(self, grace_period_s: _Optional[float] = ...) -> None: ...

class Label(_message.Message):
    __slots__ = ("key", "value")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: str
    def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class HealthCheck(_message.Message):
    __slots__ = ("type", "command", "port", "path", "interval_s", "timeout_s", "grace_period_s", "consecutive_failures")
    class Type(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        TYPE_UNSPECIFIED: _ClassVar[HealthCheck.Type]
        COMMAND: _ClassVar[HealthCheck.Type]
        TCP: _ClassVar[HealthCheck.Type]
        HTTP: _ClassVar[HealthCheck.Type]
    TYPE_UNSPECIFIED: HealthCheck.Type
    COMMAND: HealthCheck.Type
    TCP: HealthCheck.Type
    HTTP: HealthCheck.Type
    TYPE_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    GRACE_PERIOD_S_FIELD_NUMBER: _ClassVar[int]
    CONSECUTIVE_FAILURES_FIELD_NUMBER: _ClassVar[int]
    type: HealthCheck.Type
    command: CommandInfo
    port: int
    path: str
    interval_s: float
    timeout_s: float
    grace_period_s: float
    consecutive_failures: int
    def __init__(self, type: _Optional[_Union[HealthCheck.Type, str]] = ..., command: _Optional[_Union[CommandInfo, _Mapping]] = ..., port: _Optional[int] = ..., path: _Optional[str] = ..., interval_s: _Optional[float] = ..., timeout_s: _Optional[float] = ..., grace_period_s: _Optional[float] = ..., consecutive_failures: _Optional[int] = ...) -> None: ...

class TaskInfo(_message.Message):
    __slots__ = ("name", "task_id", "agent_id", "resources", "command", "container", "kill_policy", "labels", "health_check")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_FIELD_NUMBER: _ClassVar[int]
    KILL_POLICY_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    HEALTH_CHECK_FIELD_NUMBER: _ClassVar[int]
    name: str
    task_id: str
    agent_id: str
    resources: _containers.RepeatedCompositeFieldContainer[Resource]
    command: CommandInfo
    container: ContainerInfo
    kill_policy: KillPolicy
    labels: _containers.RepeatedCompositeFieldContainer[Label]
    health_check: HealthCheck
    def __init__(self, name: _Optional[str] = ..., task_id: _Optional[str] = ..., agent_id: _Optional[str] = ..., resources: _Optional[_Iterable[_Union[Resource, _Mapping]]] = ..., command: _Optional[_Union[CommandInfo, _Mapping]] = ..., container: _Optional[_Union[ContainerInfo, _Mapping]] = ..., kill_policy: _Optional[_Union[KillPolicy, _Mapping]] = ..., labels: _Optional[_Iterable[_Union[Label, _Mapping]]] = ..., health_check: _Optional[_Union[HealthCheck, _Mapping]] = ...) -> None: ...

class TaskStatus(_message.Message):
    __slots__ = ("task_id", "state", "reason", "message", "source", "agent_id", "framework_id", "timestamp", "uuid", "exit_code", "signal", "stderr_tail", "limit", "peak", "healthy", "cpu_time_s", "mem_peak_bytes", "labels")
    class Source(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        SOURCE_UNSPECIFIED: _ClassVar[TaskStatus.Source]
        SOURCE_MASTER: _ClassVar[TaskStatus.Source]
        SOURCE_AGENT: _ClassVar[TaskStatus.Source]
        SOURCE_EXECUTOR: _ClassVar[TaskStatus.Source]
    SOURCE_UNSPECIFIED: TaskStatus.Source
    SOURCE_MASTER: TaskStatus.Source
    SOURCE_AGENT: TaskStatus.Source
    SOURCE_EXECUTOR: TaskStatus.Source
    class Reason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        REASON_UNSPECIFIED: _ClassVar[TaskStatus.Reason]
        REASON_COMMAND_EXITED: _ClassVar[TaskStatus.Reason]
        REASON_CONTAINER_LIMITATION_MEMORY: _ClassVar[TaskStatus.Reason]
        REASON_CONTAINER_LIMITATION_DISK: _ClassVar[TaskStatus.Reason]
        REASON_CONTAINER_LIMITATION_PIDS: _ClassVar[TaskStatus.Reason]
        REASON_CONTAINER_LAUNCH_FAILED: _ClassVar[TaskStatus.Reason]
        REASON_TASK_KILLED_BY_REQUEST: _ClassVar[TaskStatus.Reason]
        REASON_TASK_INVALID: _ClassVar[TaskStatus.Reason]
        REASON_INVALID_OFFERS: _ClassVar[TaskStatus.Reason]
        REASON_RESOURCES_UNKNOWN: _ClassVar[TaskStatus.Reason]
        REASON_AGENT_DISCONNECTED: _ClassVar[TaskStatus.Reason]
        REASON_AGENT_REMOVED: _ClassVar[TaskStatus.Reason]
        REASON_AGENT_RESTARTED: _ClassVar[TaskStatus.Reason]
        REASON_AGENT_UNKNOWN: _ClassVar[TaskStatus.Reason]
        REASON_FRAMEWORK_REMOVED: _ClassVar[TaskStatus.Reason]
        REASON_MASTER_DISCONNECTED: _ClassVar[TaskStatus.Reason]
        REASON_RECONCILIATION: _ClassVar[TaskStatus.Reason]
        REASON_TASK_UNKNOWN: _ClassVar[TaskStatus.Reason]
        REASON_TASK_KILLED_DURING_LAUNCH: _ClassVar[TaskStatus.Reason]
        REASON_TASK_HEALTH_CHECK_STATUS_UPDATED: _ClassVar[TaskStatus.Reason]
        REASON_TASK_UNHEALTHY: _ClassVar[TaskStatus.Reason]
        REASON_TASK_UNAUTHORIZED: _ClassVar[TaskStatus.Reason]
    REASON_UNSPECIFIED: TaskStatus.Reason
    REASON_COMMAND_EXITED: TaskStatus.Reason
    REASON_CONTAINER_LIMITATION_MEMORY: TaskStatus.Reason
    REASON_CONTAINER_LIMITATION_DISK: TaskStatus.Reason
    REASON_CONTAINER_LIMITATION_PIDS: TaskStatus.Reason
    REASON_CONTAINER_LAUNCH_FAILED: TaskStatus.Reason
    REASON_TASK_KILLED_BY_REQUEST: TaskStatus.Reason
    REASON_TASK_INVALID: TaskStatus.Reason
    REASON_INVALID_OFFERS: TaskStatus.Reason
    REASON_RESOURCES_UNKNOWN: TaskStatus.Reason
    REASON_AGENT_DISCONNECTED: TaskStatus.Reason
    REASON_AGENT_REMOVED: TaskStatus.Reason
    REASON_AGENT_RESTARTED: TaskStatus.Reason
    REASON_AGENT_UNKNOWN: TaskStatus.Reason
    REASON_FRAMEWORK_REMOVED: TaskStatus.Reason
    REASON_MASTER_DISCONNECTED: TaskStatus.Reason
    REASON_RECONCILIATION: TaskStatus.Reason
    REASON_TASK_UNKNOWN: TaskStatus.Reason
    REASON_TASK_KILLED_DURING_LAUNCH: TaskStatus.Reason
    REASON_TASK_HEALTH_CHECK_STATUS_UPDATED: TaskStatus.Reason
    REASON_TASK_UNHEALTHY: TaskStatus.Reason
    REASON_TASK_UNAUTHORIZED: TaskStatus.Reason
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    FRAMEWORK_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    UUID_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    STDERR_TAIL_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    PEAK_FIELD_NUMBER: _ClassVar[int]
    HEALTHY_FIELD_NUMBER: _ClassVar[int]
    CPU_TIME_S_FIELD_NUMBER: _ClassVar[int]
    MEM_PEAK_BYTES_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    state: TaskState
    reason: TaskStatus.Reason
    message: str
    source: TaskStatus.Source
    agent_id: str
    framework_id: str
    timestamp: float
    uuid: bytes
    exit_code: int
    signal: int
    stderr_tail: str
    limit: int
    peak: int
    healthy: bool
    cpu_time_s: float
    mem_peak_bytes: int
    labels: _containers.RepeatedCompositeFieldContainer[Label]
    def __init__(self, task_id: _Optional[str] = ..., state: _Optional[_Union[TaskState, str]] = ..., reason: _Optional[_Union[TaskStatus.Reason, str]] = ..., message: _Optional[str] = ..., source: _Optional[_Union[TaskStatus.Source, str]] = ..., agent_id: _Optional[str] = ..., framework_id: _Optional[str] = ..., timestamp: _Optional[float] = ..., uuid: _Optional[bytes] = ..., exit_code: _Optional[int] = ..., signal: _Optional[int] = ..., stderr_tail: _Optional[str] = ..., limit: _Optional[int] = ..., peak: _Optional[int] = ..., healthy: _Optional[bool] = ..., cpu_time_s: _Optional[float] = ..., mem_peak_bytes: _Optional[int] = ..., labels: _Optional[_Iterable[_Union[Label, _Mapping]]] = ...) -> None: ...

class TaskUsage(_message.Message):
    __slots__ = ("framework_id", "task_id", "agent_id", "state", "cpu_time_s", "mem_bytes", "mem_peak_bytes", "mem_limit_bytes", "pids", "pids_limit", "disk_bytes", "disk_limit_bytes", "cpus", "timestamp")
    FRAMEWORK_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CPU_TIME_S_FIELD_NUMBER: _ClassVar[int]
    MEM_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEM_PEAK_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEM_LIMIT_BYTES_FIELD_NUMBER: _ClassVar[int]
    PIDS_FIELD_NUMBER: _ClassVar[int]
    PIDS_LIMIT_FIELD_NUMBER: _ClassVar[int]
    DISK_BYTES_FIELD_NUMBER: _ClassVar[int]
    DISK_LIMIT_BYTES_FIELD_NUMBER: _ClassVar[int]
    CPUS_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    framework_id: str
    task_id: str
    agent_id: str
    state: str
    cpu_time_s: float
    mem_bytes: int
    mem_peak_bytes: int
    mem_limit_bytes: int
    pids: int
    pids_limit: int
    disk_bytes: int
    disk_limit_bytes: int
    cpus: float
    timestamp: float
    def __init__(self, framework_id: _Optional[str] = ..., task_id: _Optional[str] = ..., agent_id: _Optional[str] = ..., state: _Optional[str] = ..., cpu_time_s: _Optional[float] = ..., mem_bytes: _Optional[int] = ..., mem_peak_bytes: _Optional[int] = ..., mem_limit_bytes: _Optional[int] = ..., pids: _Optional[int] = ..., pids_limit: _Optional[int] = ..., disk_bytes: _Optional[int] = ..., disk_limit_bytes: _Optional[int] = ..., cpus: _Optional[float] = ..., timestamp: _Optional[float] = ...) -> None: ...
