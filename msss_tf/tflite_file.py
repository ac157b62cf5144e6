"""Reading and editing .tflite flatbuffers without an interpreter: the schema, the
model's metadata entries, its operator names (and a check for Flex ops), its output
names. Used by the exporter, the TFLite runtimes and the metadata writer alike."""

from __future__ import annotations

import os
from typing import Dict

import numpy as np

TFLITE_CONFIG_METADATA = "msss_config"  # metadata entry of every msss-tf .tflite: the MSSSConfig JSON


def tflite_schema():
    """LiteRT's generated flatbuffer schema module (`Model`, `ModelT`, `BuiltinOperator`)."""
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:  # pragma: no cover - older LiteRT wheels
        from tensorflow.lite.python import schema_py_generated as schema
    return schema


def graph_output_names(content: bytes) -> list:
    """Tensor names of the outputs of the main subgraph of a TFLite flatbuffer."""
    graph = tflite_schema().Model.GetRootAsModel(content, 0).Subgraphs(0)
    return [graph.Tensors(graph.Outputs(i)).Name().decode()
            for i in range(graph.OutputsLength())]


def op_output_names(content: bytes) -> list:
    """Output tensor names of every operator of a TFLite flatbuffer."""
    schema = tflite_schema()
    model = schema.Model.GetRootAsModel(content, 0)
    names = []
    for g in range(model.SubgraphsLength()):
        graph = model.Subgraphs(g)
        for i in range(graph.OperatorsLength()):
            op = graph.Operators(i)
            for j in range(op.OutputsLength()):
                names.append(graph.Tensors(op.Outputs(j)).Name().decode())
    return names


def read_tflite(path: str):
    """The flatbuffer `Model` of a .tflite file; errors name the path."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such TFLite file: {path}")
    with open(path, "rb") as f:
        content = f.read()
    schema = tflite_schema()
    try:
        if len(content) < 8 or content[4:8] != b"TFL3":
            raise ValueError("no TFL3 file identifier")
        model = schema.Model.GetRootAsModel(content, 0)
        model.OperatorCodesLength(), model.SubgraphsLength()
    except Exception as e:
        raise ValueError(f"{path}: not a TFLite model ({e})") from e
    return model, content


def add_tflite_metadata(content: bytes, name: str, data: bytes) -> bytes:
    """Returns `content` with a metadata entry `name` holding `data` (replaced if any)."""
    import flatbuffers

    schema = tflite_schema()
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(content, 0))
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(data, np.uint8)
    model.buffers = list(model.buffers or [])
    model.metadata = list(model.metadata or [])
    for entry in model.metadata:
        if entry.name.decode() == name:
            model.buffers[entry.buffer] = buffer
            break
    else:
        model.buffers.append(buffer)
        entry = schema.MetadataT()
        entry.name = name
        entry.buffer = len(model.buffers) - 1
        model.metadata.append(entry)
    builder = flatbuffers.Builder(len(content) + len(data) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def tflite_metadata(path: str) -> Dict[str, bytes]:
    """The metadata entries of a .tflite file, {name: bytes}."""
    model, _ = read_tflite(path)
    out = {}
    try:
        for i in range(model.MetadataLength()):
            entry = model.Metadata(i)
            buffer = model.Buffers(entry.Buffer())
            out[entry.Name().decode()] = (buffer.DataAsNumpy().tobytes()
                                          if buffer.DataLength() else b"")
    except Exception as e:  # a truncated file reads past its end
        raise ValueError(f"{path}: not a valid TFLite model ({type(e).__name__}: {e})") from e
    return out


def tflite_op_names(path: str) -> list:
    """The sorted distinct operator names of a .tflite file, read from its flatbuffer
    (not from an interpreter, whose delegates hide ops): built-ins by name
    ("CONV_2D", "RFFT2D"), custom ops by their custom code ("FlexRFFT" for Flex)."""
    model, _ = read_tflite(path)
    schema = tflite_schema()
    names = {value: key for key, value in vars(schema.BuiltinOperator).items()
             if not key.startswith("_")}
    ops = set()
    try:
        for i in range(model.OperatorCodesLength()):
            code = model.OperatorCodes(i)
            builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
            if builtin == schema.BuiltinOperator.CUSTOM:
                ops.add(code.CustomCode().decode())
            else:
                ops.add(names.get(builtin, f"BUILTIN_{builtin}"))
    except Exception as e:  # a truncated file reads past its end
        raise ValueError(f"{path}: not a valid TFLite model ({type(e).__name__}: {e})") from e
    return sorted(ops)


def assert_no_flex(path: str) -> list:
    """Raises ValueError naming the Flex (SELECT_TF_OPS) and custom ops of a .tflite
    file; returns its op names otherwise."""
    ops = tflite_op_names(path)
    schema = tflite_schema()
    builtin_names = set(vars(schema.BuiltinOperator))
    foreign = [op for op in ops if op.startswith("Flex") or op not in builtin_names]
    if foreign:
        raise ValueError(f"{path}: needs ops outside the TFLite built-ins: {foreign} "
                         f"(Flex = SELECT_TF_OPS, which edge runtimes lack)")
    return ops
