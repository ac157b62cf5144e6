"""Renders utterances with libespeak-ng in a fresh process (run as a script, not imported).

eSpeak NG keeps synthesis state (voicing-source phase, noise generators) in static
variables that neither espeak_Terminate nor its seed functions reset, so the same call gives
different samples depending on what was said before in the process. A fresh process per
clip makes each clip depend on its own requests only.

Usage: python _espeak_worker.py LIBRARY_PATH DATA_PATH < requests.json > pcm
  requests.json: a JSON list of {"text", "voice", "rate", "pitch", "range"}; the literal
  "info" instead prints the library's version and sample rate as JSON.
  stdout: for each request, a little-endian uint32 sample count, then that many int16
  samples at the library's sample rate (22050 Hz).
"""

import ctypes
import json
import struct
import sys

AUDIO_OUTPUT_SYNCHRONOUS = 2
ESPEAK_INITIALIZE_DONT_EXIT = 0x8000
POS_CHARACTER = 1
ESPEAK_CHARS_UTF8 = 1
RATE, PITCH, RANGE = 1, 3, 4


def main():
    lib = ctypes.CDLL(sys.argv[1])
    libc = ctypes.CDLL(None)
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_Info.restype = ctypes.c_char_p
    lib.espeak_Info.argtypes = [ctypes.c_void_p]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_Synth.argtypes = [
        ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
        ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
    lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
    sample_rate = lib.espeak_Initialize(
        AUDIO_OUTPUT_SYNCHRONOUS, 0, sys.argv[2].encode(), ESPEAK_INITIALIZE_DONT_EXIT)
    if sample_rate <= 0:
        sys.exit(f"espeak_Initialize failed ({sample_rate})")
    request = sys.stdin.read()
    out = sys.stdout.buffer
    if request.strip() == '"info"':
        version = lib.espeak_Info(None).decode()
        out.write(json.dumps({"version": version, "sample_rate": sample_rate}).encode())
        return
    chunks = []

    @ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)
    def on_audio(wav, num_samples, events):
        if wav and num_samples > 0:
            chunks.append(ctypes.string_at(wav, 2 * num_samples))
        return 0

    lib.espeak_SetSynthCallback(on_audio)
    for item in json.loads(request):
        if lib.espeak_SetVoiceByName(item["voice"].encode()) != 0:
            sys.exit(f"unknown eSpeak voice {item['voice']!r}")
        for parameter, key in ((RATE, "rate"), (PITCH, "pitch"), (RANGE, "range")):
            lib.espeak_SetParameter(parameter, int(item[key]), 0)
        # The library's noise uses its own generator and libc rand(): seed both per request.
        lib.espeak_ng_SetRandSeed(1)
        libc.srand(1)
        text = item["text"].encode("utf-8")
        chunks.clear()
        status = lib.espeak_Synth(text, len(text) + 1, 0, POS_CHARACTER, 0, ESPEAK_CHARS_UTF8,
                                  None, None)
        if status != 0:
            sys.exit(f"espeak_Synth failed ({status})")
        pcm = b"".join(chunks)
        out.write(struct.pack("<I", len(pcm) // 2))
        out.write(pcm)


if __name__ == "__main__":
    main()
