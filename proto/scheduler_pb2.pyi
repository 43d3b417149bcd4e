from corral.proto import messages_pb2 as _messages_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Operation(_message.Message):
    __slots__ = ("type", "launch", "reserve", "unreserve")
    class Type(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        TYPE_UNSPECIFIED: _ClassVar[Operation.Type]
        LAUNCH: _ClassVar[Operation.Type]
        LAUNCH_GROUP: _ClassVar[Operation.Type]
        RESERVE: _ClassVar[Operation.Type]
        UNRESERVE: _ClassVar[Operation.Type]
    TYPE_UNSPECIFIED: Operation.Type
    LAUNCH: Operation.Type
    LAUNCH_GROUP: Operation.Type
    RESERVE: Operation.Type
    UNRESERVE: Operation.Type
    class Launch(_message.Message):
        __slots__ = ("task_infos",)
        TASK_INFOS_FIELD_NUMBER: _ClassVar[int]
        task_infos: _containers.RepeatedCompositeFieldContainer[_messages_pb2.TaskInfo]
        def __init__(self, task_infos: _Optional[_Iterable[_Union[_messages_pb2.TaskInfo, _Mapping]]] = ...) -> None: ...
    class Reserve(_message.Message):
        __slots__ = ("resources",)
        RESOURCES_FIELD_NUMBER: _ClassVar[int]
        resources: _containers.RepeatedCompositeFieldContainer[_messages_pb2.Resource]
        def __init__(self, resources: _Optional[_Iterable[_Union[_messages_pb2.Resource, _Mapping]]] = ...) -> None: ...
    class Unreserve(_message.Message):
        __slots__ = ("resources",)
        RESOURCES_FIELD_NUMBER: _ClassVar[int]
        resources: _containers.RepeatedCompositeFieldContainer[_messages_pb2.Resource]
        def __init__(self, resources: _Optional[_Iterable[_Union[_messages_pb2.Resource, _Mapping]]] = ...) -> None: ...
    TYPE_FIELD_NUMBER: _ClassVar[int]
    LAUNCH_FIELD_NUMBER: _ClassVar[int]
    RESERVE_FIELD_NUMBER: _ClassVar[int]
    UNRESERVE_FIELD_NUMBER: _ClassVar[int]
    type: Operation.Type
    launch: Operation.Launch
    reserve: Operation.Reserve
    unreserve: Operation.Unreserve
    def __init__(self, type: _Optional[_Union[Operation.Type, str]] = ..., launch: _Optional[_Union[Operation.Launch, _Mapping]] = ..., reserve: _Optional[_Union[Operation.Reserve, _Mapping]] = ..., unreserve: _Optional[_Union[Operation.Unreserve, _Mapping]] = ...) -> None: ...

class Call(_message.Message):
    __slots__ = ("framework_id", "type", "subscribe", "accept", "decline", "revive", "suppress", "kill", "acknowledge", "reconcile", "message", "acknowledges", "update_framework")
    class Type(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        TYPE_UNSPECIFIED: _ClassVar[Call.Type]
        SUBSCRIBE: _ClassVar[Call.Type]
        TEARDOWN: _ClassVar[Call.Type]
        ACCEPT: _ClassVar[Call.Type]
        DECLINE: _ClassVar[Call.Type]
        REVIVE: _ClassVar[Call.Type]
        SUPPRESS: _ClassVar[Call.Type]
        KILL: _ClassVar[Call.Type]
        ACKNOWLEDGE: _ClassVar[Call.Type]
        RECONCILE: _ClassVar[Call.Type]
        MESSAGE: _ClassVar[Call.Type]
        UPDATE_FRAMEWORK: _ClassVar[Call.Type]
    TYPE_UNSPECIFIED: Call.Type
    SUBSCRIBE: Call.Type
    TEARDOWN: Call.Type
    ACCEPT: Call.Type
    DECLINE: Call.Type
    REVIVE: Call.Type
    SUPPRESS: Call.Type
    KILL: Call.Type
    ACKNOWLEDGE: Call.Type
    RECONCILE: Call.Type
    MESSAGE: Call.Type
    UPDATE_FRAMEWORK: Call.Type
    class Subscribe(_message.Message):
        __slots__ = ("framework_info",)
        FRAMEWORK_INFO_FIELD_NUMBER: _ClassVar[int]
        framework_info: _messages_pb2.FrameworkInfo
        def __init__(self, framework_info: _Optional[_Union[_messages_pb2.FrameworkInfo, _Mapping]] = ...) -> None: ...
    class UpdateFramework(_message.Message):
        __slots__ = ("framework_info",)
        FRAMEWORK_INFO_FIELD_NUMBER: _ClassVar[int]
        framework_info: _messages_pb2.FrameworkInfo
        def __init__(self, framework_info: _Optional[_Union[_messages_pb2.FrameworkInfo, _Mapping]] = ...) -> None: ...
    class Accept(_message.Message):
        __slots__ = ("offer_ids", "operations", "filters")
        OFFER_IDS_FIELD_NUMBER: _ClassVar[int]
        OPERATIONS_FIELD_NUMBER: _ClassVar[int]
        FILTERS_FIELD_NUMBER: _ClassVar[int]
        offer_ids: _containers.RepeatedScalarFieldContainer[str]
        operations: _containers.RepeatedCompositeFieldContainer[Operation]
        filters: _messages_pb2.Filters
        def __init__(self, offer_ids: _Optional[_Iterable[str]] = ..., operations: _Optional[_Iterable[_Union[Operation, _Mapping]]] = ..., filters: _Optional[_Union[_messages_pb2.Filters, _Mapping]] = ...) -> None: ...
    class Decline(_message.Message):
        __slots__ = ("offer_ids", "filters")
        OFFER_IDS_FIELD_NUMBER: _ClassVar[int]
        FILTERS_FIELD_NUMBER: _ClassVar[int]
        offer_ids: _containers.RepeatedScalarFieldContainer[str]
        filters: _messages_pb2.Filters
        def __init__(self, offer_ids: _Optional[_Iterable[str]] = ..., filters: _Optional[_Union[_messages_pb2.Filters, _Mapping]] = ...) -> None: ...
    class Revive(_message.Message):
        __slots__ = ("roles",)
        ROLES_FIELD_NUMBER: _ClassVar[int]
        roles: _containers.RepeatedScalarFieldContainer[str]
        def __init__(self, roles: _Optional[_Iterable[str]] = ...) -> None: ...
    class Suppress(_message.Message):
        __slots__ = ("roles",)
        ROLES_FIELD_NUMBER: _ClassVar[int]
        roles: _containers.RepeatedScalarFieldContainer[str]
        def __init__(self, roles: _Optional[_Iterable[str]] = ...) -> None: ...
    class Kill(_message.Message):
        __slots__ = ("task_id", "agent_id")
        TASK_ID_FIELD_NUMBER: _ClassVar[int]
        AGENT_ID_FIELD_NUMBER: _ClassVar[int]
        task_id: str
        agent_id: str
        def __init__(self, task_id: _Optional[str] = ..., agent_id: _Optional[str] = ...) -> None: ...
    class Acknowledge(_message.Message):
        __slots__ = ("agent_id", "task_id", "uuid")
        AGENT_ID_FIELD_NUMBER: _ClassVar[int]
        TASK_ID_FIELD_NUMBER: _ClassVar[int]
        UUID_FIELD_NUMBER: _ClassVar[int]
        agent_id: str
        task_id: str
        uuid: bytes
        def __init__(self, agent_id: _Optional[str] = ..., task_id: _Optional[str] = ..., uuid: _Optional[bytes] = ...) -> None: ...
    class Reconcile(_message.Message):
        __slots__ = ("tasks",)
        class Task(_message.Message):
            __slots__ = ("task_id", "agent_id")
            TASK_ID_FIELD_NUMBER: _ClassVar[int]
            AGENT_ID_FIELD_NUMBER: _ClassVar[int]
            task_id: str
            agent_id: str
            def __init__(self, task_id: _Optional[str] = ..., agent_id: _Optional[str] = ...) -> None: ...
        TASKS_FIELD_NUMBER: _ClassVar[int]
        tasks: _containers.RepeatedCompositeFieldContainer[Call.Reconcile.Task]
        def __init__(self, tasks: _Optional[_Iterable[_Union[Call.Reconcile.Task, _Mapping]]] = ...) -> None: ...
    class Message(_message.Message):
        __slots__ = ("agent_id", "data")
        AGENT_ID_FIELD_NUMBER: _ClassVar[int]
        DATA_FIELD_NUMBER: _ClassVar[int]
        agent_id: str
        data: bytes
        def __init__(self, agent_id: _Optional[str] = ..., data: _Optional[bytes] = ...) -> None: ...
    FRAMEWORK_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBE_FIELD_NUMBER: _ClassVar[int]
    ACCEPT_FIELD_NUMBER: _ClassVar[int]
    DECLINE_FIELD_NUMBER: _ClassVar[int]
    REVIVE_FIELD_NUMBER: _ClassVar[int]
    SUPPRESS_FIELD_NUMBER: _ClassVar[int]
    KILL_FIELD_NUMBER: _ClassVar[int]
    ACKNOWLEDGE_FIELD_NUMBER: _ClassVar[int]
    RECONCILE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ACKNOWLEDGES_FIELD_NUMBER: _ClassVar[int]
    UPDATE_FRAMEWORK_FIELD_NUMBER: _ClassVar[int]
    framework_id: str
    type: Call.Type
    subscribe: Call.Subscribe
    accept: Call.Accept
    decline: Call.Decline
    revive: Call.Revive
    suppress: Call.Suppress
    kill: Call.Kill
    acknowledge: Call.Acknowledge
    reconcile: Call.Reconcile
    message: Call.Message
    acknowledges: _containers.RepeatedCompositeFieldContainer[Call.Acknowledge]
    update_framework: Call.UpdateFramework
    def __init__(self, framework_id: _Optional[str] = ..., type: _Optional[_Union[Call.Type, str]] = ..., subscribe: _Optional[_Union[Call.Subscribe, _Mapping]] = ..., accept: _Optional[_Union[Call.Accept, _Mapping]] = ..., decline: _Optional[_Union[Call.Decline, _Mapping]] = ..., revive: _Optional[_Union[Call.Revive, _Mapping]] = ..., suppress: _Optional[_Union[Call.Suppress, _Mapping]] = ..., kill: _Optional[_Union[Call.Kill, _Mapping]] = ..., acknowledge: _Optional[_Union[Call.Acknowledge, _Mapping]] = ..., reconcile: _Optional[_Union[Call.Reconcile, _Mapping]] = ..., message: _Optional[_Union[Call.Message, _Mapping]] = ..., acknowledges: _Optional[_Iterable[_Union[Call.Acknowledge, _Mapping]]] = ..., update_framework: _Optional[_Union[Call.UpdateFramework, _Mapping]] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("type", "subscribed", "offers", "rescind", "update", "message", "failure", "error", "updates")
    class Type(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        TYPE_UNSPECIFIED: _ClassVar[Event.Type]
        SUBSCRIBED: _ClassVar[Event.Type]
        OFFERS: _ClassVar[Event.Type]
        RESCIND: _ClassVar[Event.Type]
        UPDATE: _ClassVar[Event.Type]
        MESSAGE: _ClassVar[Event.Type]
        FAILURE: _ClassVar[Event.Type]
        ERROR: _ClassVar[Event.Type]
        HEARTBEAT: _ClassVar[Event.Type]
    TYPE_UNSPECIFIED: Event.Type
    SUBSCRIBED: Event.Type
    OFFERS: Event.Type
    RESCIND: Event.Type
    UPDATE: Event.Type
    MESSAGE: Event.Type
    FAILURE: Event.Type
    ERROR: Event.Type
    HEARTBEAT: Event.Type
    class Subscribed(_message.Message):
        __slots__ = ("framework_id", "heartbeat_interval_s", "master_info")
        FRAMEWORK_ID_FIELD_NUMBER: _ClassVar[int]
        HEARTBEAT_INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
        MASTER_INFO_FIELD_NUMBER: _ClassVar[int]
        framework_id: str
        heartbeat_interval_s: float
        master_info: _messages_pb2.MasterInfo
        def __init__(self, framework_id: _Optional[str] = ..., heartbeat_interval_s: _Optional[float] = ..., master_info: _Optional[_Union[_messages_pb2.MasterInfo, _Mapping]] = ...) -> None: ...
    class Offers(_message.Message):
        __slots__ = ("offers",)
        OFFERS_FIELD_NUMBER: _ClassVar[int]
        offers: _containers.RepeatedCompositeFieldContainer[_messages_pb2.Offer]
        def __init__(self, offers: _Optional[_Iterable[_Union[_messages_pb2.Offer, _Mapping]]] = ...) -> None: ...
    class Rescind(_message.Message):
        __slots__ = ("offer_id",)
        OFFER_ID_FIELD_NUMBER: _ClassVar[int]
        offer_id: str
        def __init__(self, offer_id: _Optional[str] = ...) -> None: ...
    class Update(_message.Message):
        __slots__ = ("status",)
        STATUS_FIELD_NUMBER: _ClassVar[int]
        status: _messages_pb2.TaskStatus
        def __init__(self, status: _Optional[_Union[_messages_pb2.TaskStatus, _Mapping]] = ...) -> None: ...
    class Message(_message.Message):
        __slots__ = ("agent_id", "data")
        AGENT_ID_FIELD_NUMBER: _ClassVar[int]
        DATA_FIELD_NUMBER: _ClassVar[int]
        agent_id: str
        data: bytes
        def __init__(self, agent_id: _Optional[str] = ..., data: _Optional[bytes] = ...) -> None: ...
    class Failure(_message.Message):
        __slots__ = ("agent_id", "message")
        AGENT_ID_FIELD_NUMBER: _ClassVar[int]
        MESSAGE_FIELD_NUMBER: _ClassVar[int]
        agent_id: str
        message: str
        def __init__(self, agent_id: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...
    class Error(_message.Message):
        __slots__ = ("message", "code")
        MESSAGE_FIELD_NUMBER: _ClassVar[int]
        CODE_FIELD_NUMBER: _ClassVar[int]
        message: str
        code: str
        def __init__(self, message: _Optional[str] = ..., code: _Optional[str] = ...) -> None: ...
    TYPE_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBED_FIELD_NUMBER: _ClassVar[int]
    OFFERS_FIELD_NUMBER: _ClassVar[int]
    RESCIND_FIELD_NUMBER: _ClassVar[int]
    UPDATE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    UPDATES_FIELD_NUMBER: _ClassVar[int]
    type: Event.Type
    subscribed: Event.Subscribed
    offers: Event.Offers
    rescind: Event.Rescind
    update: Event.Update
    message: Event.Message
    failure: Event.Failure
    error: Event.Error
    updates: _containers.RepeatedCompositeFieldContainer[Event.Update]
    def __init__(self, type: _Optional[_Union[Event.Type, str]] = ..., subscribed: _Optional[_Union[Event.Subscribed, _Mapping]] = ..., offers: _Optional[_Union[Event.Offers, _Mapping]] = ..., rescind: _Optional[_Union[Event.Rescind, _Mapping]] = ..., update: _Optional[_Union[Event.Update, _Mapping]] = ..., message: _Optional[_Union[Event.Message, _Mapping]] = ..., failure: _Optional[_Union[Event.Failure, _Mapping]] = ..., error: _Optional[_Union[Event.Error, _Mapping]] = ..., updates: _Optional[_Iterable[_Union[Event.Update, _Mapping]]] = ...) -> None: ...
