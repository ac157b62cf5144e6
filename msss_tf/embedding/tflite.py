"""`TFLiteEmbedder`: an exported window `.tflite` run by the LiteRT interpreter, for
audio of any length.

The model takes exactly one 0.96 s window ([1, window_samples] float32); a clip is cut
into the windows the Keras `Embedder` would encode (the same `WindowPlan`), which run one
by one, and their frames are averaged (scene) or arranged (timestamps) as there. NumPy in,
NumPy out (`AudioEmbedder`); input is checked on the host (`as_audio_batch`,
`check_window`), since the TFLite graph cannot raise. The file's MSSS config comes from
its "msss_config" metadata entry (read with `msss_tf.tflite_file.tflite_metadata`), else an
msss_config.json beside it.
"""

from __future__ import annotations

import json
import os
from typing import Optional

import numpy as np

from msss_tf.config import MSSSConfig
from msss_tf.embedding.audio import as_audio_batch, check_window, empty_timestamps
from msss_tf.embedding.windows import WindowPlan
from msss_tf.rundir import CONFIG_FILENAME


class TFLiteEmbedder:
    """Runs an exported window `.tflite` with the LiteRT interpreter, for audio of any
    length: the clip is cut into the windows that `Embedder` would encode (the same
    `WindowPlan`), which are run one by one ([1, 15600] each).

    Args:
        path: the `.tflite` file (from `export_encoder` / `convert_window_tflite`).
        config: its MSSSConfig; default: the file's "msss_config" metadata, else
            `msss_config.json` beside it or in `../assets/`.
        hop_ms: the timestamp hop (default: the one stored at export, else 40 ms).
        num_threads: interpreter threads (None: LiteRT's default).

    Same NumPy API as `Embedder`: `scene_embeddings(audio)`,
    `timestamp_embeddings(audio)`, plus `window(one_window)`; attributes `sample_rate`,
    `scene_embedding_size`, `timestamp_embedding_size`, `config`, `plan`.
    """

    def __init__(self, path: str, config: Optional[MSSSConfig] = None,
                 hop_ms: Optional[float] = None, num_threads: Optional[int] = None):
        from ai_edge_litert.interpreter import Interpreter

        from msss_tf.tflite_file import TFLITE_CONFIG_METADATA, tflite_metadata

        self.path = path
        # Missing / truncated / foreign files: a message naming the path.
        stored = tflite_metadata(path).get(TFLITE_CONFIG_METADATA)
        stored_hop = None
        if config is None and stored:
            meta = json.loads(stored.decode())
            stored_hop = meta.pop("_hop_ms", None)
            meta = {k: v for k, v in meta.items() if not k.startswith("_")}  # _variant, ...
            config = MSSSConfig.from_dict(meta)
        if config is None:
            folder = os.path.dirname(os.path.abspath(path))
            for candidate in (os.path.join(folder, CONFIG_FILENAME),
                              os.path.join(folder, os.pardir, "assets", CONFIG_FILENAME)):
                if os.path.exists(candidate):
                    config = MSSSConfig.load(candidate)
                    break
        if config is None:
            raise ValueError(f"{path}: no MSSS config in its metadata or beside it; pass "
                             f"config=MSSSConfig(...)")
        self.config = config
        self.plan = WindowPlan(config, hop_ms or stored_hop or 40.0)
        self.hop_ms = self.plan.hop_ms
        self.sample_rate = config.sample_rate
        try:
            self.interpreter = Interpreter(model_path=path, num_threads=num_threads)
            self.interpreter.allocate_tensors()
            self._runner = self.interpreter.get_signature_runner()
        except Exception as e:
            raise ValueError(f"{path}: the LiteRT interpreter cannot run it "
                             f"({type(e).__name__}: {e})") from e
        inputs = self._runner.get_input_details()
        outputs = self._runner.get_output_details()
        if set(inputs) != {"waveform"} or not {"embedding", "frames"} <= set(outputs):
            raise ValueError(f"{path}: not an msss-tf window model (inputs {sorted(inputs)}, "
                             f"outputs {sorted(outputs)})")
        shape = tuple(inputs["waveform"]["shape"])
        if shape != (1, self.plan.window_samples):
            raise ValueError(f"{path}: input shape {shape} does not match the config's "
                             f"window of {self.plan.window_samples} samples")
        self.scene_embedding_size = int(outputs["embedding"]["shape"][-1])
        self.timestamp_embedding_size = self.scene_embedding_size

    def window(self, window) -> tuple:
        """One window float32 [window_samples] -> (embedding [D], frames [3, D])."""
        window = check_window(window, self.plan.window_samples)
        out = self._runner(waveform=window)
        return out["embedding"][0], out["frames"][0]

    def encode_windows(self, windows, batch_size=None) -> np.ndarray:
        """float32 [c, window_samples] -> frames [c, 3, D]; one window at a time
        (`batch_size` is ignored)."""
        return np.stack([self.window(w)[1] for w in as_audio_batch(windows)])

    def _windows_frames(self, clip, starts):
        hop = self.config.stft_hop
        return np.stack([self.window(clip[s * hop:s * hop + self.plan.window_samples])[1]
                         for s in starts])

    def scene_embeddings(self, audio, batch_size=None) -> np.ndarray:
        """float32 [n, samples] -> [n, D]; `batch_size` is ignored (one window at a time)."""
        audio = as_audio_batch(audio)
        out = np.zeros((len(audio), self.scene_embedding_size), np.float32)
        pad = int(self.plan.scene_pad(audio.shape[1]))
        starts = self.plan.scene_starts(
            self.plan.num_frames(audio.shape[1] + pad)).numpy()
        for i, clip in enumerate(audio):
            clip = np.pad(clip, (0, pad))
            out[i] = self._windows_frames(clip, starts).mean(axis=(0, 1))
        return out

    def timestamp_embeddings(self, audio, batch_size=None):
        """float32 [n, samples] -> ([n, T, D], timestamps_ms [n, T])."""
        audio = as_audio_batch(audio)
        starts, num_timestamps, num_tiles, end_pad = self.plan.timestamp_plan(audio.shape[1])
        starts = starts.numpy()
        num_timestamps = int(num_timestamps)
        if len(audio) == 0:
            return empty_timestamps(audio.shape[1], self.hop_ms, self.sample_rate,
                                     self.scene_embedding_size)
        embs = []
        for clip in audio:
            clip = np.pad(clip, (self.plan.start_pad, int(end_pad)))
            frames = self._windows_frames(clip, starts)[None]  # [1, M*K, J, D]
            emb, stamps = self.plan.arrange_timestamp_frames(frames, int(num_tiles),
                                                             num_timestamps)
            embs.append(emb.numpy()[0])
        stamps = np.tile(stamps.numpy()[:1], (len(audio), 1))
        return np.stack(embs), stamps
