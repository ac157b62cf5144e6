"""Audio data for msss-tf: reading and checking files, the synthetic corpus, TFRecord
preparation, the NumPy corpus arrays and the pre-training input pipelines.

    load_audio / read_audio_info / AudioError    audio.py      files -> checked waveforms
    find_audio_files / SkipReport                files.py      folder -> files; skipped files
    synthetic_corpus / write_corpus_as_wav       synthetic.py  the built-in offline corpus
    prepare_corpus / tfrecord_dataset            tfrecord.py   folder -> TFRecord shards
    pretrain_dataset / sample_segment_pair       pipeline.py   clips -> segment-pair batches
    write_corpus_arrays / SegmentPairs           arrays/       folder -> int16 arrays ->
                                                               segment-pair batches, no TF

The names below are imported on first use (PEP 562): `import msss_tf.data.audio`,
`msss_tf.data.files` or `msss_tf.data.arrays` does not load TensorFlow, which only
pipeline.py and tfrecord.py need (the arrays path runs where only numpy, scipy, jax and
keras are installed).
"""

from __future__ import annotations

from msss_tf.lazy import lazy_exports

_PUBLIC = {
    # audio.py
    "AUDIO_EXTENSIONS": "msss_tf.data.audio",
    "AudioError": "msss_tf.data.audio",
    "load_audio": "msss_tf.data.audio",
    "read_audio_info": "msss_tf.data.audio",
    # files.py
    "SkipReport": "msss_tf.data.files",
    "find_audio_files": "msss_tf.data.files",
    # pipeline.py (TensorFlow)
    "check_audio_folder": "msss_tf.data.pipeline",
    "pretrain_dataset": "msss_tf.data.pipeline",
    "sample_segment_pair": "msss_tf.data.pipeline",
    # synthetic.py
    "synthetic_corpus": "msss_tf.data.synthetic",
    "write_corpus_as_wav": "msss_tf.data.synthetic",
    # tfrecord.py (TensorFlow)
    "is_prepared_dir": "msss_tf.data.tfrecord",
    "prepare_corpus": "msss_tf.data.tfrecord",
    "read_manifest": "msss_tf.data.tfrecord",
    "tfrecord_dataset": "msss_tf.data.tfrecord",
    # arrays/ (numpy; SegmentPairs also keras)
    "CorpusArrays": "msss_tf.data.arrays",
    "SegmentPairs": "msss_tf.data.arrays",
    "pairs_per_second": "msss_tf.data.arrays",
    "write_corpus_arrays": "msss_tf.data.arrays",
    # Downstream tasks (msss_tf/data/tasks/): tfds speech_commands and nsynth, HEAR-layout
    # folders (DCASE 2016 task 2), and the built-in synthetic probe tasks.
    "Example": "msss_tf.data.tasks",
    "MissingTaskFilesError": "msss_tf.data.tasks",
    "TASK_NAMES": "msss_tf.data.tasks",
    "Task": "msss_tf.data.tasks",
    "TaskDataNotFoundError": "msss_tf.data.tasks",
    "load_task": "msss_tf.data.tasks",
    "synthetic_task": "msss_tf.data.tasks",
    "write_hear_task": "msss_tf.data.tasks",
}

__all__ = sorted(_PUBLIC)
__getattr__, __dir__ = lazy_exports(__name__, _PUBLIC, globals())
