import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SmokeStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SMOKE_STATUS_UNSPECIFIED: _ClassVar[SmokeStatus]
    SMOKE_STATUS_OK: _ClassVar[SmokeStatus]
    SMOKE_STATUS_DEGRADED: _ClassVar[SmokeStatus]
    SMOKE_STATUS_FAILING: _ClassVar[SmokeStatus]
SMOKE_STATUS_UNSPECIFIED: SmokeStatus
SMOKE_STATUS_OK: SmokeStatus
SMOKE_STATUS_DEGRADED: SmokeStatus
SMOKE_STATUS_FAILING: SmokeStatus

class SmokeTestRequest(_message.Message):
    __slots__ = ("run_checks",)
    RUN_CHECKS_FIELD_NUMBER: _ClassVar[int]
    run_checks: bool
    def __init__(self, run_checks: _Optional[bool] = ...) -> None: ...

class SmokeTestResponse(_message.Message):
    __slots__ = ("status", "message", "version", "uptime", "checks", "instance", "start_time", "recent_changes")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    UPTIME_FIELD_NUMBER: _ClassVar[int]
    CHECKS_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    RECENT_CHANGES_FIELD_NUMBER: _ClassVar[int]
    status: SmokeStatus
    message: str
    version: str
    uptime: _duration_pb2.Duration
    checks: _containers.RepeatedCompositeFieldContainer[CheckResult]
    instance: str
    start_time: _timestamp_pb2.Timestamp
    recent_changes: _containers.RepeatedCompositeFieldContainer[Transition]
    def __init__(self, status: _Optional[_Union[SmokeStatus, str]] = ..., message: _Optional[str] = ..., version: _Optional[str] = ..., uptime: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., checks: _Optional[_Iterable[_Union[CheckResult, _Mapping]]] = ..., instance: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., recent_changes: _Optional[_Iterable[_Union[Transition, _Mapping]]] = ...) -> None: ...

class Transition(_message.Message):
    __slots__ = ("time", "kind", "name", "old_state", "new_state", "reason")
    TIME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    OLD_STATE_FIELD_NUMBER: _ClassVar[int]
    NEW_STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    time: _timestamp_pb2.Timestamp
    kind: str
    name: str
    old_state: str
    new_state: str
    reason: str
    def __init__(self, time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., kind: _Optional[str] = ..., name: _Optional[str] = ..., old_state: _Optional[str] = ..., new_state: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class CheckResult(_message.Message):
    __slots__ = ("name", "kind", "required", "passing", "last_latency", "last_error", "last_change_time", "last_run_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_FIELD_NUMBER: _ClassVar[int]
    PASSING_FIELD_NUMBER: _ClassVar[int]
    LAST_LATENCY_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    LAST_CHANGE_TIME_FIELD_NUMBER: _ClassVar[int]
    LAST_RUN_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: str
    required: bool
    passing: bool
    last_latency: _duration_pb2.Duration
    last_error: str
    last_change_time: _timestamp_pb2.Timestamp
    last_run_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[str] = ..., required: _Optional[bool] = ..., passing: _Optional[bool] = ..., last_latency: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., last_error: _Optional[str] = ..., last_change_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_run_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
