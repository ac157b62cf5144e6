"""TFLite Model Metadata for MediaPipe Tasks' AudioEmbedder / AudioClassifier.

MediaPipe's audio tasks (and the TFLite Task Library) read a model's description from
the standard TFLite Model Metadata: a flatbuffer of the metadata schema (file identifier
"M001") stored in the model's metadata entry named "TFLITE_METADATA". Without it they
refuse the file ("Audio embedder models require TFLite Model Metadata but none was
found"). From it they take the input's sample rate and channel count (`AudioProperties`),
resample the caller's audio to that rate and cut it into buffers of the input's length
(here 15600 samples, back to back, the last one zero-padded); a classifier's label file
is an associated file (TENSOR_AXIS_LABELS) packed as a zip archive after the flatbuffer.

The metadata is built with the schema's own generated classes (`msss_tf/third_party/tflite_metadata_schema_py_generated.py`,
TFLite Support's metadata_schema_py_generated.py, vendored: the two libraries that ship
it, tflite-support and mediapipe 0.10.21, pin protobuf < 5, which TensorFlow 2.21 cannot
install beside them) and written into the model with the TFLite model schema
(`msss_tf.tflite_file.add_tflite_metadata`), never as hand-assembled bytes. The run's
MSSSConfig stays in its own entry ("msss_config"). tests/evaluation/test_mediapipe.py reads the
files back with MediaPipe's own metadata library and loads them with its AudioEmbedder.
"""

from __future__ import annotations

import io
import zipfile
from typing import Dict, Optional, Sequence

import flatbuffers

from msss_tf.third_party import tflite_metadata_schema_py_generated as _md

METADATA_NAME = "TFLITE_METADATA"  # the entry MediaPipe and the Task Library read
FILE_IDENTIFIER = b"M001"
# The largest schema version among the fields written: AudioProperties (1.3.0); label
# files use only 1.0.0 fields. MediaPipe refuses a file whose min_parser_version is above
# its own parser's (1.5.0 in 0.10.21); the tests check this value against MediaPipe's
# GetMinimumMetadataParserVersion.
MIN_PARSER_VERSION = "1.3.0"
LABELS_FILENAME = "labels.txt"


def _signature_tensor_names(content: bytes) -> Dict[str, Dict[int, str]]:
    """{"inputs"/"outputs": {tensor index: signature key}} of the model's first signature
    (the window models have one), so each subgraph tensor is described by its key."""
    from msss_tf.tflite_file import tflite_schema

    model = tflite_schema().Model.GetRootAsModel(content, 0)
    names: Dict[str, Dict[int, str]] = {"inputs": {}, "outputs": {}}
    if model.SignatureDefsLength():
        signature = model.SignatureDefs(0)
        for i in range(signature.InputsLength()):
            item = signature.Inputs(i)
            names["inputs"][item.TensorIndex()] = item.Name().decode()
        for i in range(signature.OutputsLength()):
            item = signature.Outputs(i)
            names["outputs"][item.TensorIndex()] = item.Name().decode()
    subgraph = model.Subgraphs(0)
    inputs = [subgraph.Inputs(i) for i in range(subgraph.InputsLength())]
    outputs = [subgraph.Outputs(i) for i in range(subgraph.OutputsLength())]
    return {"inputs": [names["inputs"].get(t, subgraph.Tensors(t).Name().decode())
                       for t in inputs],
            "outputs": [names["outputs"].get(t, subgraph.Tensors(t).Name().decode())
                        for t in outputs]}


def _tensor(name: str, description: str, properties) -> "_md.TensorMetadataT":
    tensor = _md.TensorMetadataT()
    tensor.name = name
    tensor.description = description
    tensor.content = _md.ContentT()
    if isinstance(properties, _md.AudioPropertiesT):
        tensor.content.contentPropertiesType = _md.ContentProperties.AudioProperties
    else:
        tensor.content.contentPropertiesType = _md.ContentProperties.FeatureProperties
    tensor.content.contentProperties = properties
    return tensor


def _audio_properties(sample_rate: int, channels: int = 1) -> "_md.AudioPropertiesT":
    audio = _md.AudioPropertiesT()
    audio.sampleRate = int(sample_rate)
    audio.channels = int(channels)
    return audio


def _waveform_tensor(config) -> "_md.TensorMetadataT":
    seconds = config.segment_samples / config.sample_rate
    return _tensor(
        "waveform",
        f"Mono audio at {config.sample_rate} Hz, float32 in [-1, 1]: one window of "
        f"{config.segment_samples} samples ({seconds:.3f} s). MediaPipe resamples the "
        f"audio to {config.sample_rate} Hz and feeds consecutive windows.",
        _audio_properties(config.sample_rate, 1))


_OUTPUT_DESCRIPTIONS = {
    "embedding": "The window's embedding, float32 [1, {d}]: the mean of its frame "
                 "embeddings (not L2-normalised).",
    "frames": "The window's frame embeddings, float32 [1, 3, {d}] (three 0.32 s frames).",
}


def _pack(metadata: "_md.ModelMetadataT") -> bytes:
    builder = flatbuffers.Builder(1024)
    builder.Finish(metadata.Pack(builder), file_identifier=FILE_IDENTIFIER)
    return bytes(builder.Output())


def _model_metadata(name: str, description: str, inputs, outputs,
                    version: Optional[str] = None) -> "_md.ModelMetadataT":
    from msss_tf import __version__

    subgraph = _md.SubGraphMetadataT()
    subgraph.inputTensorMetadata = list(inputs)
    subgraph.outputTensorMetadata = list(outputs)
    metadata = _md.ModelMetadataT()
    metadata.name = name
    metadata.description = description
    metadata.version = version or f"msss-tf {__version__}"
    metadata.author = "msss-tf"
    metadata.subgraphMetadata = [subgraph]
    metadata.minParserVersion = MIN_PARSER_VERSION
    return metadata


def embedder_metadata(content: bytes, config, variant: str = "float32") -> bytes:
    """The TFLite Model Metadata flatbuffer ("M001") for a window encoder model: input
    `waveform` described as audio (config.sample_rate Hz, one channel), each output
    (`embedding` [1, D], `frames` [1, 3, D], in the subgraph's order) as features."""
    tensors = _signature_tensor_names(content)
    if tensors["inputs"] != ["waveform"]:
        raise ValueError(f"not a window model: inputs {tensors['inputs']}")
    from msss_tf.tflite_file import tflite_schema

    model = tflite_schema().Model.GetRootAsModel(content, 0)
    subgraph = model.Subgraphs(0)
    outputs = []
    for i, key in enumerate(tensors["outputs"]):
        d = subgraph.Tensors(subgraph.Outputs(i)).ShapeAsNumpy()[-1]
        outputs.append(_tensor(key, _OUTPUT_DESCRIPTIONS.get(key, key).format(d=d),
                               _md.FeaturePropertiesT()))
    return _pack(_model_metadata(
        f"msss-tf audio encoder ({variant})",
        "Self-supervised audio encoder (MSSS, ICASSP 2022): log-mel front end + "
        "EfficientNet, one embedding per 0.975 s window. For MediaPipe Tasks' "
        "AudioEmbedder: embeddings[0] ('embedding') is the window's embedding.",
        [_waveform_tensor(config)], outputs))


def add_embedder_metadata(content: bytes, config, variant: str = "float32") -> bytes:
    """`content` (a window .tflite) with its TFLite Model Metadata ("TFLITE_METADATA")
    added or replaced; its other metadata entries ("msss_config") are kept."""
    from msss_tf.tflite_file import add_tflite_metadata

    return add_tflite_metadata(content, METADATA_NAME,
                               embedder_metadata(content, config, variant))


def classifier_metadata(content: bytes, config, labels: Sequence[str], name: str,
                        multilabel: bool = False) -> bytes:
    """The TFLite Model Metadata for a classifier (front end + encoder + probe): input
    `waveform` as audio, the one output as class scores whose labels are the associated
    file `labels.txt` (TENSOR_AXIS_LABELS), which `pack_associated_files` appends."""
    tensors = _signature_tensor_names(content)
    if tensors["inputs"] != ["waveform"] or len(tensors["outputs"]) != 1:
        raise ValueError(f"not a one-output window classifier: {tensors}")
    scores = _tensor(tensors["outputs"][0],
                     ("Independent per-class probabilities (sigmoid)" if multilabel
                      else "Class probabilities (softmax)") + f" over {len(labels)} classes.",
                     _md.FeaturePropertiesT())
    label_file = _md.AssociatedFileT()
    label_file.name = LABELS_FILENAME
    label_file.description = "Class names, one a line, in the order of the scores."
    label_file.type = _md.AssociatedFileType.TENSOR_AXIS_LABELS
    scores.associatedFiles = [label_file]
    return _pack(_model_metadata(
        f"msss-tf audio classifier: {name}",
        f"Linear probe '{name}' on the frozen msss-tf encoder, one prediction per "
        f"{config.segment_samples / config.sample_rate:.3f} s window.",
        [_waveform_tensor(config)], [scores]))


def pack_associated_files(content: bytes, files: Dict[str, bytes]) -> bytes:
    """`content` followed by a zip archive of `files` ({name: bytes}, stored
    uncompressed), which is how TFLite Support's MetadataPopulator packs associated files
    and where MediaPipe's metadata extractor looks for them. Must be the last step: any
    later rewrite of the flatbuffer drops the archive."""
    out = io.BytesIO()
    out.write(content)
    with zipfile.ZipFile(out, "a", compression=zipfile.ZIP_STORED) as archive:
        for file_name, data in files.items():
            archive.writestr(file_name, data)
    return out.getvalue()


def add_classifier_metadata(content: bytes, config, labels: Sequence[str], name: str,
                            multilabel: bool = False) -> bytes:
    """`content` with classifier metadata and `labels.txt` packed in."""
    from msss_tf.tflite_file import add_tflite_metadata

    labels = [str(label) for label in labels]
    bad = [label for label in labels if not label.strip() or "\n" in label]
    if bad:
        raise ValueError(f"label names must be non-empty single lines: {bad}")
    content = add_tflite_metadata(
        content, METADATA_NAME, classifier_metadata(content, config, labels, name, multilabel))
    return pack_associated_files(content, {LABELS_FILENAME: "\n".join(labels).encode() + b"\n"})


def read_metadata(path_or_content) -> Optional["_md.ModelMetadataT"]:
    """The file's TFLite Model Metadata as the schema's object API (None without any)."""
    from msss_tf.tflite_file import tflite_metadata, tflite_schema

    if isinstance(path_or_content, (bytes, bytearray)):
        model = tflite_schema().Model.GetRootAsModel(path_or_content, 0)
        entries = {}
        for i in range(model.MetadataLength()):
            entry = model.Metadata(i)
            entries[entry.Name().decode()] = model.Buffers(entry.Buffer()).DataAsNumpy()
        data = entries.get(METADATA_NAME)
        data = None if data is None else bytes(data.tobytes())
    else:
        data = tflite_metadata(path_or_content).get(METADATA_NAME)
    if not data:
        return None
    if not _md.ModelMetadata.ModelMetadataBufferHasIdentifier(data, 0):
        raise ValueError(f"{METADATA_NAME} is not a metadata flatbuffer (no M001 identifier)")
    return _md.ModelMetadataT.InitFromObj(_md.ModelMetadata.GetRootAsModelMetadata(data, 0))
