"""A realistic, offline, reproducible pre-training corpus: speech (eSpeak NG), music
(General MIDI SoundFont via tinysoundfont) and procedurally synthesised everyday sounds
and scenes, with room reverb, background noise and level variation.

    build_corpus              corpus.py     seed + minutes -> folder of WAV clips + manifest
    speech_clip / Speaker     speech.py     eSpeak NG voices and procedural text
    music_clip / MidiRenderer music.py      GM programs, notes, chords, melodies, drums
    sounds_clip / EVENTS      sounds.py     impacts, engines, calls, water, sirens, scenes
    apply_variation           variation.py  reverb, noise, gain

Needs the `corpus` extra (docs/corpus.md); a missing package raises
MissingCorpusPackageError, which names what to install.
"""

from msss_tf.data.realistic.deps import INSTALL_HINT, MissingCorpusPackageError
from msss_tf.data.realistic.corpus import KINDS, build_corpus, plan_corpus, render_clip

__all__ = ["INSTALL_HINT", "KINDS", "MissingCorpusPackageError", "build_corpus",
           "plan_corpus", "render_clip"]
