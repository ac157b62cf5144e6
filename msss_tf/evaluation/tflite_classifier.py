"""A probe's classifier .tflite (from `export.convert_probe_tflite`) run as MediaPipe
Tasks' AudioClassifier runs it, and its agreement with the probe's SavedModel.

MediaPipe feeds the model back-to-back buffers of the input tensor's length (15600
samples at 16 kHz), the last one zero-padded, and returns one score vector per buffer.
`TFLiteClassifier.window_scores` does the same with the LiteRT interpreter; a clip's
answer is the mean of its windows' scores weighted by each window's share of real audio
(`clip_scores`): an app does the same with MediaPipe's results. `classifier_agreement` compares that answer's top class with the probe
SavedModel's (`serving_default`) on every clip of a task's split.
"""

from __future__ import annotations

import json
import math
from typing import Optional

import numpy as np



class TFLiteClassifier:
    """Runs a classifier .tflite (`waveform` [1, W] -> `probabilities` [1, C]).

    Args:
        path: the file. Its class names come from its "msss_config" metadata entry.
        num_threads: interpreter threads (None: LiteRT's default).

    Attributes: `label_names` (list of C str), `window_samples` (W), `name` (the probe).
    """

    def __init__(self, path: str, num_threads: Optional[int] = None):
        from ai_edge_litert.interpreter import Interpreter

        from msss_tf.tflite_file import TFLITE_CONFIG_METADATA, tflite_metadata

        self.path = path
        stored = tflite_metadata(path).get(TFLITE_CONFIG_METADATA)
        meta = json.loads(stored.decode()) if stored else {}
        if "_labels" not in meta:
            raise ValueError(f"{path}: not an msss-tf classifier (no class names in its "
                             f"{TFLITE_CONFIG_METADATA!r} metadata)")
        self.label_names = list(meta["_labels"])
        self.name = meta.get("_probe", "probe")
        try:
            interpreter = Interpreter(model_path=path, num_threads=num_threads)
            self._runner = interpreter.get_signature_runner()
        except Exception as e:
            raise ValueError(f"{path}: the LiteRT interpreter cannot run it "
                             f"({type(e).__name__}: {e})") from e
        inputs = self._runner.get_input_details()
        outputs = self._runner.get_output_details()
        if set(inputs) != {"waveform"} or set(outputs) != {"probabilities"}:
            raise ValueError(f"{path}: not an msss-tf classifier (inputs {sorted(inputs)}, "
                             f"outputs {sorted(outputs)})")
        self.window_samples = int(inputs["waveform"]["shape"][-1])

    def windows(self, audio) -> np.ndarray:
        """MediaPipe's buffers of a mono clip: float32 [ceil(n / W) or 1, W]."""
        audio = np.asarray(audio, np.float32).reshape(-1)
        n = max(1, math.ceil(len(audio) / self.window_samples))
        padded = np.zeros(n * self.window_samples, np.float32)
        padded[:len(audio)] = audio
        return padded.reshape(n, self.window_samples)

    def window_scores(self, audio) -> np.ndarray:
        """float32 [windows, C]: the scores of each buffer of the clip."""
        return np.stack([self._runner(waveform=w[None])["probabilities"][0]
                         for w in self.windows(audio)])

    def window_weights(self, num_samples: int) -> np.ndarray:
        """float32 [windows]: each buffer's share of real audio (1 but for the last one,
        whose zero padding would otherwise pull a short clip's answer towards silence)."""
        n = max(1, math.ceil(num_samples / self.window_samples))
        real = np.minimum(self.window_samples,
                          num_samples - self.window_samples * np.arange(n))
        return np.maximum(real, 1).astype(np.float32) / self.window_samples

    def average_windows(self, scores, num_samples: int) -> np.ndarray:
        """float32 [C]: windows' scores [windows, C] of a clip of `num_samples` samples,
        averaged with `window_weights` (what an app does with MediaPipe's results)."""
        return np.average(scores, axis=0,
                          weights=self.window_weights(num_samples)).astype(np.float32)

    def clip_scores(self, audio) -> np.ndarray:
        """float32 [C]: the clip's answer, `average_windows` of its `window_scores`."""
        audio = np.asarray(audio, np.float32).reshape(-1)
        return self.average_windows(self.window_scores(audio), len(audio))


def classifier_agreement(tflite_path: str, saved_model_path: str, task,
                         split: str = "test", num_threads: Optional[int] = None) -> dict:
    """The classifier file against the probe's SavedModel (`serving_default`) on every
    clip of `task`'s `split` (a scene task), at two levels:

    * windows: each of MediaPipe's buffers of each clip, given to both; their top classes
      should be the same (the file is the SavedModel's graph on one window);
    * clips: the file's `clip_scores` (what an app computes from MediaPipe's results)
      against the SavedModel on the whole clip, whose windows are placed differently
      (spread evenly, none padded), so a probe that is unsure can flip.

    Returns {"split", "clips", "agree", "agreement", "windows", "windows_agree",
    "window_agreement", "tflite_top1_acc", "saved_model_top1_acc"} ("agree"/"agreement":
    clips; a clip is right when its top class is one of its labels).
    """
    import tensorflow as tf

    if task.kind != "scene":
        raise ValueError(f"task {task.name}: classifier files are for scene tasks, "
                         f"not {task.kind!r}")
    classifier = TFLiteClassifier(tflite_path, num_threads=num_threads)
    if classifier.label_names != list(task.label_names):
        raise ValueError(f"{tflite_path}: its class names are not task {task.name}'s")
    serving = tf.saved_model.load(saved_model_path).signatures["serving_default"]

    def saved_model_scores(batch):
        return serving(waveform=tf.constant(batch))["probabilities"].numpy()

    clips = agree = windows = windows_agree = tflite_right = saved_right = 0
    for example in task.examples(split):
        waveform = np.asarray(example.waveform, np.float32).reshape(-1)
        scores = classifier.window_scores(waveform)
        window_tops = np.argmax(saved_model_scores(classifier.windows(waveform)), axis=-1)
        windows += len(scores)
        windows_agree += int(np.sum(window_tops == np.argmax(scores, axis=-1)))
        tflite_top = int(np.argmax(classifier.average_windows(scores, len(waveform))))
        saved_top = int(np.argmax(saved_model_scores(waveform[None])[0]))
        clips += 1
        agree += saved_top == tflite_top
        saved_right += saved_top in example.label
        tflite_right += tflite_top in example.label
    if not clips:
        raise ValueError(f"task {task.name}: split {split!r} has no clips")
    return {"split": split, "clips": clips, "agree": agree,
            "agreement": round(agree / clips, 6), "windows": windows,
            "windows_agree": windows_agree,
            "window_agreement": round(windows_agree / windows, 6),
            "tflite_top1_acc": round(tflite_right / clips, 6),
            "saved_model_top1_acc": round(saved_right / clips, 6)}
