"""Audio data for msss-tf: reading and checking files, the synthetic corpus, TFRecord
preparation and the pre-training input pipeline.

    load_audio / find_audio_files / SkipReport   audio.py      files -> checked waveforms
    synthetic_corpus / write_corpus_as_wav       synthetic.py  the built-in offline corpus
    prepare_corpus / tfrecord_dataset            tfrecord.py   folder -> TFRecord shards
    pretrain_dataset / sample_segment_pair       pipeline.py   clips -> segment-pair batches
"""

from msss_tf.data.audio import (
    AUDIO_EXTENSIONS,
    AudioError,
    SkipReport,
    find_audio_files,
    load_audio,
    read_audio_info,
)
from msss_tf.data.pipeline import check_audio_folder, pretrain_dataset, sample_segment_pair
from msss_tf.data.synthetic import synthetic_corpus, write_corpus_as_wav
from msss_tf.data.tfrecord import (
    is_prepared_dir,
    prepare_corpus,
    read_manifest,
    tfrecord_dataset,
)

__all__ = [
    "AUDIO_EXTENSIONS",
    "AudioError",
    "SkipReport",
    "check_audio_folder",
    "find_audio_files",
    "is_prepared_dir",
    "load_audio",
    "prepare_corpus",
    "pretrain_dataset",
    "read_audio_info",
    "read_manifest",
    "sample_segment_pair",
    "synthetic_corpus",
    "tfrecord_dataset",
    "write_corpus_as_wav",
]

# Downstream tasks (msss_tf/data/tasks/): tfds speech_commands and nsynth, HEAR-layout
# folders (DCASE 2016 task 2), and the built-in synthetic probe tasks.
from msss_tf.data.tasks import (  # noqa: E402
    TASK_NAMES,
    Example,
    MissingTaskFilesError,
    Task,
    TaskDataNotFoundError,
    load_task,
    synthetic_task,
    write_hear_task,
)

__all__ += [
    "Example",
    "MissingTaskFilesError",
    "TASK_NAMES",
    "Task",
    "TaskDataNotFoundError",
    "load_task",
    "synthetic_task",
    "write_hear_task",
]
