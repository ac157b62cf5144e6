"""Runs exported .tflite files through the real MediaPipe Tasks runtime (AudioEmbedder /
AudioClassifier) and reads their metadata back with MediaPipe's own metadata library.

Run by tests/evaluation/test_mediapipe.py with an interpreter that has `mediapipe` (this project's
venv when it installs there, else the one named by MSSS_MEDIAPIPE_PYTHON), so it imports
nothing from msss_tf or TensorFlow: numpy and mediapipe only.

    python tests/evaluation/mediapipe_runner.py JOBS.json OUT.json

JOBS.json: a list of {"model": .tflite path, "task": "embedder" | "classifier",
"audio": .npy path (float32 [samples]), "sample_rate": Hz}. OUT.json: a list (same
order) of {"ok": bool, "error": message, "metadata_json": MetadataDisplayer's JSON,
"associated_files": [...], "min_parser_version": MediaPipe's computation for the
metadata flatbuffer, "timestamps_ms": [...], and "embeddings": [window][head] lists of
floats with "head_names", or "classifications": [window] lists of [label, score] (top
first)}, plus {"mediapipe_version": ...} as the last item.
"""

import json
import sys

import numpy as np


def _read_back(model_path):
    """What MediaPipe's Python metadata library reads from the file: its
    MetadataDisplayer where it imports (0.10.21); in wheels where that module is broken
    (0.10.3x and 1.x lack its `mediapipe.tasks.cc` wrapper), MediaPipe's own copy of the
    metadata schema plus the zip archive of associated files."""
    with open(model_path, "rb") as f:
        buffer = f.read()
    try:
        from mediapipe.tasks.python.metadata import metadata as mp_metadata
    except ImportError as e:
        return dict(_read_back_schema(buffer), reader=f"schema ({e})")
    displayer = mp_metadata.MetadataDisplayer.with_model_buffer(buffer)
    out = {"reader": "MetadataDisplayer",
           "metadata_json": displayer.get_metadata_json(),
           "associated_files": sorted(displayer.get_packed_associated_file_list())}
    from mediapipe.tasks.cc.metadata.python import _pywrap_metadata_version

    out["min_parser_version"] = _pywrap_metadata_version.GetMinimumMetadataParserVersion(
        displayer.get_metadata_buffer())
    if "labels.txt" in out["associated_files"]:
        out["labels"] = displayer.get_associated_file_buffer("labels.txt").decode().split("\n")
    return out


def _read_back_schema(buffer):
    import io
    import zipfile

    from mediapipe.tasks.metadata import metadata_schema_py_generated as md
    from mediapipe.tasks.metadata import schema_py_generated as schema

    model = schema.Model.GetRootAsModel(buffer, 0)
    entries = {model.Metadata(i).Name().decode(): model.Metadata(i).Buffer()
               for i in range(model.MetadataLength())}
    data = model.Buffers(entries["TFLITE_METADATA"]).DataAsNumpy().tobytes()
    meta = md.ModelMetadataT.InitFromObj(md.ModelMetadata.GetRootAsModelMetadata(data, 0))
    sub = meta.subgraphMetadata[0]

    def tensor(t):
        props = t.content.contentProperties if t.content else None
        out = {"name": t.name.decode() if isinstance(t.name, bytes) else t.name}
        if isinstance(props, md.AudioPropertiesT):
            out["content"] = {"content_properties_type": "AudioProperties",
                              "content_properties": {"sample_rate": props.sampleRate,
                                                     "channels": props.channels}}
        return out

    doc = {"subgraph_metadata": [{"input_tensor_metadata": [tensor(t) for t in
                                                            sub.inputTensorMetadata],
                                  "output_tensor_metadata": [tensor(t) for t in
                                                             sub.outputTensorMetadata]}],
           "min_parser_version": meta.minParserVersion.decode()}
    out = {"metadata_json": json.dumps(doc), "associated_files": [],
           "min_parser_version": doc["min_parser_version"]}
    try:
        with zipfile.ZipFile(io.BytesIO(buffer)) as archive:
            out["associated_files"] = sorted(archive.namelist())
            if "labels.txt" in out["associated_files"]:
                out["labels"] = archive.read("labels.txt").decode().split("\n")
    except zipfile.BadZipFile:
        pass
    return out


def _run(job):
    from mediapipe.tasks import python as mp_tasks
    # The modules, not the package: 1.x's mediapipe.tasks.python.audio leaves out
    # AudioEmbedder, which its audio_embedder module still has.
    from mediapipe.tasks.python.audio import audio_classifier, audio_embedder
    from mediapipe.tasks.python.components.containers import audio_data as mp_audio_data

    audio = np.load(job["audio"]).astype(np.float32)
    data = mp_audio_data.AudioData.create_from_array(audio, job["sample_rate"])
    base = mp_tasks.BaseOptions(model_asset_path=job["model"])
    out = _read_back(job["model"])
    if job["task"] == "embedder":
        options = audio_embedder.AudioEmbedderOptions(base_options=base, l2_normalize=False,
                                                quantize=False)
        with audio_embedder.AudioEmbedder.create_from_options(options) as task:
            results = task.embed(data)
        out["timestamps_ms"] = [r.timestamp_ms for r in results]
        out["head_names"] = [e.head_name for e in results[0].embeddings] if results else []
        out["embeddings"] = [[np.asarray(e.embedding, np.float64).tolist()
                              for e in r.embeddings] for r in results]
    else:
        options = audio_classifier.AudioClassifierOptions(base_options=base, max_results=-1)
        with audio_classifier.AudioClassifier.create_from_options(options) as task:
            results = task.classify(data)
        out["timestamps_ms"] = [r.timestamp_ms for r in results]
        out["classifications"] = [
            [[c.category_name, float(c.score)] for c in r.classifications[0].categories]
            for r in results]
    return out


def main(jobs_path, out_path):
    import mediapipe

    with open(jobs_path) as f:
        jobs = json.load(f)
    results = []
    for job in jobs:
        try:
            results.append(dict(_run(job), ok=True))
        except Exception as e:
            results.append({"ok": False, "error": f"{type(e).__name__}: {e}"})
    results.append({"mediapipe_version": getattr(mediapipe, "__version__", "unknown")})
    with open(out_path, "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main(*sys.argv[1:3])
