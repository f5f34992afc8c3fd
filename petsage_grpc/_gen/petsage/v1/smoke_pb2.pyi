import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
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
    __slots__ = ()
    def __init__(self) -> None: ...

class SmokeTestResponse(_message.Message):
    __slots__ = ("status", "message", "version", "uptime")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    UPTIME_FIELD_NUMBER: _ClassVar[int]
    status: SmokeStatus
    message: str
    version: str
    uptime: _duration_pb2.Duration
    def __init__(self, status: _Optional[_Union[SmokeStatus, str]] = ..., message: _Optional[str] = ..., version: _Optional[str] = ..., uptime: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...
