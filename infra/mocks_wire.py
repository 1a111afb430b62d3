"""Protobuf plumbing of the mock engine (infra/mocks.py): registrations with resource refs as URNs."""

from __future__ import annotations

from typing import Any

# The SDK's wire signatures: a dict with _SIG set to _RESOURCE_SIG is a resource reference.
_SIG = "4dabf18193072939515e22adb298388d"
_RESOURCE_SIG = "5cf8f73096256a8f31e491e813e4eb8e"


def _strip_refs(value: Any) -> None:
    """Replace resource references inside a protobuf Struct/ListValue by their URN strings, in place."""
    from google.protobuf import struct_pb2

    if isinstance(value, struct_pb2.Struct):
        for key in list(value.fields):
            item = value.fields[key]
            kind = item.WhichOneof("kind")
            if kind == "struct_value":
                inner = item.struct_value.fields
                if _SIG in inner and inner[_SIG].string_value == _RESOURCE_SIG:
                    value.fields[key].string_value = inner["urn"].string_value
                else:
                    _strip_refs(item.struct_value)
            elif kind == "list_value":
                _strip_refs(item.list_value)
    elif isinstance(value, struct_pb2.ListValue):
        for item in value.values:
            kind = item.WhichOneof("kind")
            if kind == "struct_value":
                inner = item.struct_value.fields
                if _SIG in inner and inner[_SIG].string_value == _RESOURCE_SIG:
                    item.string_value = inner["urn"].string_value
                else:
                    _strip_refs(item.struct_value)
            elif kind == "list_value":
                _strip_refs(item.list_value)


def without_resource_refs(request: Any) -> Any:
    """A copy of a registration whose resource-reference inputs are plain URNs.

    The SDK's mock monitor deserializes inputs on a worker thread; a resource reference there is
    re-hydrated into a Resource whose lookup task lands on the wrong event loop (and fails at
    random). The mocks only echo inputs back, so a URN string is all they need.
    """
    copy = type(request)()
    copy.CopyFrom(request)
    _strip_refs(copy.object)
    return copy
