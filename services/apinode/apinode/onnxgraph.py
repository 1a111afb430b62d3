"""The few parts of an ONNX model the runtime reads itself: nodes, attributes, initializers, outputs.

The service image carries onnxruntime but not the ``onnx`` package (85 MB installed), so the
messages are declared here with protobuf's own descriptor API, field numbers as in
``onnx/onnx-ml.proto``. Only the fields read are declared: protobuf keeps the others as unknown
fields, so a model parsed here and serialized again is the same model (plus what was added).
"""

from __future__ import annotations

from functools import cache

import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto
_OPTIONAL, _REPEATED = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED
_TYPES = {"string": _F.TYPE_STRING, "bytes": _F.TYPE_BYTES, "int64": _F.TYPE_INT64,
          "int32": _F.TYPE_INT32, "float": _F.TYPE_FLOAT, "double": _F.TYPE_DOUBLE}

# message -> (field, number, type or message, repeated), from onnx/onnx-ml.proto (IR version 11).
_MESSAGES = {
    "ModelProto": [("graph", 7, "GraphProto", False)],
    "GraphProto": [("node", 1, "NodeProto", True), ("initializer", 5, "TensorProto", True),
                   ("input", 11, "ValueInfoProto", True), ("output", 12, "ValueInfoProto", True),
                   ("value_info", 13, "ValueInfoProto", True)],
    "NodeProto": [("input", 1, "string", True), ("output", 2, "string", True), ("name", 3, "string", False),
                  ("op_type", 4, "string", False), ("attribute", 5, "AttributeProto", True),
                  ("domain", 7, "string", False)],
    "AttributeProto": [("name", 1, "string", False), ("f", 2, "float", False), ("i", 3, "int64", False),
                       ("s", 4, "bytes", False), ("t", 5, "TensorProto", False),
                       ("floats", 7, "float", True), ("ints", 8, "int64", True),
                       ("strings", 9, "bytes", True), ("type", 20, "int32", False)],
    "TensorProto": [("dims", 1, "int64", True), ("data_type", 2, "int32", False),
                    ("float_data", 4, "float", True), ("int64_data", 7, "int64", True),
                    ("name", 8, "string", False), ("raw_data", 9, "bytes", False),
                    ("double_data", 10, "double", True)],
    "ValueInfoProto": [("name", 1, "string", False), ("type", 2, "TypeProto", False)],
    "TypeProto": [("tensor_type", 1, "TensorType", False)],
    "TensorType": [("elem_type", 1, "int32", False), ("shape", 2, "TensorShapeProto", False)],
    "TensorShapeProto": [("dim", 1, "Dimension", True)],
    "Dimension": [("dim_value", 1, "int64", False), ("dim_param", 2, "string", False)],
}
FLOAT, INT64, DOUBLE = 1, 7, 11  # TensorProto.DataType


@cache
def _classes() -> dict[str, type]:
    # A pool of its own: the ``onnx`` package, where installed (tests, the flow), registers the real
    # ``onnx.*`` messages in the default pool.
    pool = descriptor_pool.DescriptorPool()
    file = descriptor_pb2.FileDescriptorProto(name="apinode/onnx_subset.proto", package="apinode_onnx")
    for message, fields in _MESSAGES.items():
        declared = file.message_type.add(name=message)
        for name, number, kind, repeated in fields:
            field = declared.field.add(name=name, number=number, label=_REPEATED if repeated else _OPTIONAL)
            if kind in _TYPES:
                field.type = _TYPES[kind]
            else:
                field.type, field.type_name = _F.TYPE_MESSAGE, f".apinode_onnx.{kind}"
    pool.Add(file)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"apinode_onnx.{name}"))
            for name in _MESSAGES}


def parse(model: bytes):
    """The ModelProto of a serialized model."""
    return _classes()["ModelProto"].FromString(model)


def add_float_output(model, name: str) -> bytes:
    """The model serialized with one more graph output: the float tensor ``name`` (rank 2)."""
    output = model.graph.output.add(name=name)
    output.type.tensor_type.elem_type = FLOAT
    output.type.tensor_type.shape.dim.add(dim_param="N")
    output.type.tensor_type.shape.dim.add()
    return model.SerializeToString()


def node_alone(model, node, width: int) -> bytes:
    """A model of ``node`` alone, serialized: its first input, a float tensor of ``width`` columns,
    is the graph's one input; its outputs among the graph's are the outputs; the model's other
    fields (IR version, opsets) are kept. ``model`` itself is left as it was."""
    alone = type(model)()
    alone.CopyFrom(model)
    graph = alone.graph
    for repeated in (graph.node, graph.initializer, graph.input, graph.output, graph.value_info):
        del repeated[:]
    graph.node.add().CopyFrom(node)
    for output in model.graph.output:
        if output.name in node.output:
            graph.output.add().CopyFrom(output)
    value = graph.input.add(name=node.input[0])
    value.type.tensor_type.elem_type = FLOAT
    value.type.tensor_type.shape.dim.add(dim_param="N")
    value.type.tensor_type.shape.dim.add(dim_value=width)
    return alone.SerializeToString()


# AttributeProto.type -> the field holding the value (AttributeProto.AttributeType in onnx-ml.proto).
_ATTRIBUTE_FIELDS = {1: "f", 2: "i", 3: "s", 4: "t", 6: "floats", 7: "ints", 8: "strings"}


def attributes(node) -> dict[str, object]:
    """A node's attributes by name, as their declared type says: a number, bytes, a list, or an
    array for a tensor (the attribute types not read here are left out)."""
    values: dict[str, object] = {}
    for attribute in node.attribute:
        field = _ATTRIBUTE_FIELDS.get(attribute.type)
        if field == "t":
            values[attribute.name] = tensor(attribute.t)
        elif field in ("floats", "ints", "strings"):
            values[attribute.name] = list(getattr(attribute, field))
        elif field is not None:
            values[attribute.name] = getattr(attribute, field)
    return values


def tensor(proto) -> np.ndarray:
    """A float, double or int64 tensor as an array (other types: ValueError)."""
    dtype = {FLOAT: np.float32, DOUBLE: np.float64, INT64: np.int64}.get(proto.data_type)
    if dtype is None:
        raise ValueError(f"tensor {proto.name!r} has data type {proto.data_type}, not float or int64")
    if proto.raw_data:
        flat = np.frombuffer(proto.raw_data, dtype=np.dtype(dtype).newbyteorder("<")).astype(dtype)
    else:
        listed = {FLOAT: proto.float_data, DOUBLE: proto.double_data, INT64: proto.int64_data}
        flat = np.array(listed[proto.data_type], dtype=dtype)
    return flat.reshape(tuple(proto.dims))


def column_shape(value_info) -> tuple[int, ...] | None:
    """A graph input's shape after the batch axis, or None where a dimension is not fixed."""
    dims = value_info.type.tensor_type.shape.dim
    if not dims:
        return None
    shape = []
    for dim in list(dims)[1:]:
        if not dim.dim_value:
            return None
        shape.append(dim.dim_value)
    return tuple(shape)
