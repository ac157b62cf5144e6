"""Speech from eSpeak NG (the libespeak-ng that the `espeakng-loader` wheel ships).

Text is generated procedurally: English sentences from a small grammar, words and numbers
in other languages written in Latin script, and pseudo-words, which eSpeak reads with each
language's letter-to-sound rules. A speaker is a language voice, a voice variant (the
male, female, Klatt, whisper and named variants in espeak-ng-data/voices/!v) and settings
of pitch, pitch range and speed.
"""

import dataclasses
import json
import os
import struct
import subprocess
import sys
from math import gcd
from typing import Dict, List, Sequence, Tuple

import numpy as np
from scipy import signal

from msss_tf.data.realistic.deps import require

# eSpeak NG language voices with Latin-script orthography.
LANGUAGES = (
    "en", "en-us", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan",
    "en-gb-x-gbcwmd", "en-us-nyc", "de", "fr", "fr-be", "es", "es-419", "it", "nl", "pt",
    "pt-br", "pl", "sv", "da", "nb", "fi", "cs", "sk", "ro", "hu", "tr", "id", "ms", "sw",
    "hr", "sl", "ca", "eo", "la", "et", "lv", "lt", "af", "cy", "ga", "eu", "is", "sq",
    "vi", "ia", "ht")
ENGLISH = tuple(v for v in LANGUAGES if v.startswith("en"))

# Variants in espeak-ng-data/voices/!v, by the voice quality they give.
VARIANTS = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5",
    "klatt", "klatt2", "klatt3", "klatt4", "klatt6", "croak", "whisper", "whisperf",
    "Alex", "Alicia", "Andrea", "Andy", "Annie", "Denis", "Diogo", "Gene", "Gene2",
    "Henrique", "Hugo", "Jacky", "Lee", "Marco", "Mario", "Michael", "Mike", "Nguyen",
    "Reed", "Storm", "Tweaky", "adam", "anika", "announcer", "antonio", "aunty", "belinda",
    "benjamin", "boris", "caleb", "david", "ed", "edward", "edward2", "grandma", "grandpa",
    "gustave", "ian", "iven", "iven2", "iven3", "iven4", "john", "kaukovalta", "linda",
    "marcelo", "max", "michel", "miguel", "mike2", "norbert", "pablo", "paul", "pedro",
    "quincy", "rob", "robert", "sandro", "shelby", "steph", "steph2", "steph3", "travis",
    "victor", "zac")

_NOUNS = (
    "house cat dog river table window garden city car train morning evening book letter "
    "teacher doctor child friend market bridge mountain island kitchen doorway phone "
    "computer bottle coffee bread apple orange music story picture question answer road "
    "station ticket engine flower forest ocean beach school office meeting weather "
    "winter summer lamp chair bicycle camera jacket village farmer bird horse").split()
_VERBS = (
    "see find open close bring carry take watch hear build paint clean move follow read "
    "write call ask help visit remember forget want need like keep show send").split()
_VERBS_PAST = (
    "saw found opened closed brought carried took watched heard built painted cleaned "
    "moved followed read wrote called asked helped visited remembered forgot wanted "
    "needed liked kept showed sent").split()
_ADJECTIVES = (
    "old new small big red green blue quiet loud bright dark warm cold heavy light "
    "strange happy busy empty broken beautiful careful simple early late young").split()
_NAMES = (
    "Anna Peter Maria John Sarah David Laura Michael Emma Thomas Julia Daniel Sophie "
    "Oliver Grace Henry").split()
_PLACES = "Paris London Berlin Madrid Tokyo Cairo Lima Oslo Rome Boston".split()
_PREPOSITIONS = "near behind under beside across into from".split()
_ADVERBS = "slowly quickly carefully again today tomorrow yesterday together".split()

# A few common words per language (numbers come from digits, which eSpeak reads in the
# voice's language).
_WORDS = {
    "de": "haus katze hund wasser morgen abend freund stadt bahnhof fenster ja nein danke "
          "bitte heute gestern schnell langsam gut schön",
    "fr": "maison chat chien eau matin soir ami ville gare fenêtre oui non merci bonjour "
          "aujourd'hui hier vite lentement bien beau",
    "es": "casa gato perro agua mañana noche amigo ciudad estación ventana sí no gracias "
          "hola hoy ayer rápido despacio bien bonito",
    "it": "casa gatto cane acqua mattina sera amico città stazione finestra sì no grazie "
          "ciao oggi ieri veloce piano bene bello",
    "nl": "huis kat hond water morgen avond vriend stad station raam ja nee dank hallo "
          "vandaag gisteren snel langzaam goed mooi",
    "pt": "casa gato cachorro água manhã noite amigo cidade estação janela sim não obrigado "
          "olá hoje ontem rápido devagar bem bonito",
    "pl": "dom kot pies woda rano wieczór przyjaciel miasto dworzec okno tak nie dziękuję "
          "cześć dzisiaj wczoraj szybko wolno dobrze pięknie",
    "sv": "hus katt hund vatten morgon kväll vän stad station fönster ja nej tack hej idag "
          "igår snabbt långsamt bra vacker",
    "fi": "talo kissa koira vesi aamu ilta ystävä kaupunki asema ikkuna kyllä ei kiitos "
          "hei tänään eilen nopeasti hitaasti hyvä kaunis",
    "cs": "dům kočka pes voda ráno večer přítel město nádraží okno ano ne děkuji ahoj "
          "dnes včera rychle pomalu dobře krásný",
    "tr": "ev kedi köpek su sabah akşam arkadaş şehir istasyon pencere evet hayır teşekkür "
          "merhaba bugün dün hızlı yavaş iyi güzel",
    "id": "rumah kucing anjing air pagi malam teman kota stasiun jendela ya tidak terima "
          "kasih halo hari ini kemarin cepat lambat baik",
    "sw": "nyumba paka mbwa maji asubuhi jioni rafiki mji kituo dirisha ndiyo hapana asante "
          "jambo leo jana haraka polepole nzuri",
    "hu": "ház macska kutya víz reggel este barát város állomás ablak igen nem köszönöm "
          "szia ma tegnap gyorsan lassan jó szép",
}
_ONSETS = "b c d f g h j k l m n p r s t v w z br tr st sk pl gr kr ch sh th".split()
_NUCLEI = "a e i o u a e i o u ai ei ou ie ea oo".split()
_CODAS = ["", "", "", "n", "s", "r", "l", "t", "m", "k", "nd", "st"]


@dataclasses.dataclass(frozen=True)
class Speaker:
    """One eSpeak speaker: a language voice with a variant and prosody settings.

    Attributes:
      language: an entry of LANGUAGES (the voice name, e.g. "en-us").
      variant: an entry of VARIANTS.
      pitch: base pitch, 0-99 (eSpeak's scale; 50 is the voice's default).
      pitch_range: pitch range, 0-99 (0 is a monotone, 50 normal).
      rate: speaking rate in words per minute, 80-450.
    """

    language: str
    variant: str
    pitch: int
    pitch_range: int
    rate: int

    @property
    def voice(self) -> str:
        return f"{self.language}+{self.variant}"


def random_speaker(rng: np.random.Generator, languages: Sequence[str] = LANGUAGES,
                   variants: Sequence[str] = VARIANTS) -> Speaker:
    """Draws a speaker: language, variant, pitch 15-85, range 10-90, rate 110-260 wpm."""
    return Speaker(
        language=str(rng.choice(languages)), variant=str(rng.choice(variants)),
        pitch=int(rng.integers(15, 86)), pitch_range=int(rng.integers(10, 91)),
        rate=int(rng.integers(110, 261)))


def _pseudo_word(rng: np.random.Generator) -> str:
    syllables = [str(rng.choice(_ONSETS)) + str(rng.choice(_NUCLEI)) + str(rng.choice(_CODAS))
                 for _ in range(int(rng.integers(1, 4)))]
    return "".join(syllables)


def _number(rng: np.random.Generator) -> str:
    return str(int(rng.choice([rng.integers(0, 20), rng.integers(20, 100),
                                rng.integers(100, 10000)])))


def english_sentence(rng: np.random.Generator) -> str:
    """One English sentence from a small template grammar (statements, questions, requests)."""
    c = lambda words: str(rng.choice(words))  # noqa: E731
    templates = (
        lambda: f"The {c(_ADJECTIVES)} {c(_NOUNS)} {c(_VERBS_PAST)} the {c(_NOUNS)}.",
        lambda: f"{c(_NAMES)} {c(_VERBS_PAST)} a {c(_ADJECTIVES)} {c(_NOUNS)} "
                f"{c(_PREPOSITIONS)} the {c(_NOUNS)}.",
        lambda: f"Where is the {c(_ADJECTIVES)} {c(_NOUNS)}?",
        lambda: f"Did you {c(_VERBS)} the {c(_NOUNS)} {c(_ADVERBS)}?",
        lambda: f"Please {c(_VERBS)} the {c(_NOUNS)} {c(_PREPOSITIONS)} the {c(_NOUNS)}.",
        lambda: f"We will {c(_VERBS)} {c(_NAMES)} in {c(_PLACES)} at {rng.integers(1, 13)} "
                f"o'clock.",
        lambda: f"My {c(_NOUNS)} is {c(_ADJECTIVES)}, but the {c(_NOUNS)} is "
                f"{c(_ADJECTIVES)}.",
        lambda: f"The train to {c(_PLACES)} leaves from platform {rng.integers(1, 20)}.",
        lambda: f"{c(_NAMES)}, can you {c(_VERBS)} {rng.integers(2, 100)} "
                f"{c(_NOUNS)}s {c(_ADVERBS)}?",
        lambda: f"Oh no! The {c(_NOUNS)} is {c(_ADJECTIVES)} again.",
    )
    return templates[int(rng.integers(len(templates)))]()


def sentence(rng: np.random.Generator, language: str) -> str:
    """A sentence for `language`: English grammar, or native words, numbers, pseudo-words."""
    if language.startswith("en"):
        return english_sentence(rng)
    words = _WORDS.get(language.split("-")[0], "").split()
    out = []
    for _ in range(int(rng.integers(3, 10))):
        r = rng.random()
        if words and r < 0.6:
            out.append(str(rng.choice(words)))
        elif r < 0.75:
            out.append(_number(rng))
        else:
            out.append(_pseudo_word(rng))
    text = " ".join(out)
    return text[0].upper() + text[1:] + str(rng.choice([".", ".", "?", "!", ","]))


def single_words(rng: np.random.Generator, language: str) -> str:
    """One to three isolated words (commands, names, numbers)."""
    pool = (_NOUNS + _VERBS + _NAMES) if language.startswith("en") else (
        _WORDS.get(language.split("-")[0], "").split() or [_pseudo_word(rng)])
    return " ".join(str(rng.choice(pool)) if rng.random() < 0.8 else _number(rng)
                    for _ in range(int(rng.integers(1, 4))))


class EspeakRenderer:
    """Renders text with libespeak-ng, one fresh process per `render` call.

    Args:
      sample_rate: the output sample rate in Hz (eSpeak renders at 22050 Hz).
    """

    def __init__(self, sample_rate: int = 16000):
        loader = require("espeakng_loader", "espeakng-loader")
        self.library_path = loader.get_library_path()
        self.data_path = loader.get_data_path()
        self.sample_rate = sample_rate
        self._worker = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                    "_espeak_worker.py")

    def _run(self, payload) -> bytes:
        # -I -S: the worker needs only ctypes; skip site-packages and the environment.
        proc = subprocess.run(
            [sys.executable, "-I", "-S", self._worker, self.library_path, self.data_path],
            input=json.dumps(payload).encode(), capture_output=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"eSpeak worker failed: {proc.stderr.decode(errors='replace')}")
        return proc.stdout

    def info(self) -> Dict:
        """{"version": libespeak-ng version string, "sample_rate": its native rate}."""
        return json.loads(self._run("info"))

    def render(self, items: Sequence[Tuple[str, Speaker]]) -> List[np.ndarray]:
        """Synthesises each (text, speaker) item.

        Args:
          items: (text, speaker) pairs.

        Returns:
          One float32 waveform in [-1, 1] per item, shape [samples], at `sample_rate`.
        """
        payload = [{"text": t, "voice": s.voice, "rate": s.rate, "pitch": s.pitch,
                    "range": s.pitch_range} for t, s in items]
        data = self._run(payload)
        out, pos = [], 0
        g = gcd(self.sample_rate, 22050)
        for _ in items:
            (n,) = struct.unpack_from("<I", data, pos)
            pos += 4
            pcm = np.frombuffer(data, np.int16, count=n, offset=pos).astype(np.float32) / 32768
            pos += 2 * n
            if self.sample_rate != 22050 and n:
                pcm = signal.resample_poly(pcm, self.sample_rate // g, 22050 // g)
            out.append(pcm.astype(np.float32))
        return out


def trim_silence(x: np.ndarray, threshold: float = 1e-3) -> np.ndarray:
    """Drops leading and trailing near-silence (eSpeak pads utterances)."""
    idx = np.nonzero(np.abs(x) > threshold)[0]
    return x[idx[0]: idx[-1] + 1] if len(idx) else x[:0]


def speech_clip(rng: np.random.Generator, seconds: float, renderer: EspeakRenderer
                ) -> Tuple[np.ndarray, Dict]:
    """Renders a speech clip: read sentences, a dialogue, or isolated words.

    Args:
      rng: the clip's random generator (its only source of randomness).
      seconds: clip length in seconds.
      renderer: an EspeakRenderer whose sample rate is the clip's.

    Returns:
      (waveform float32 [round(seconds * sample_rate)], info) where info holds the
      style and the speakers' voice names.
    """
    sr = renderer.sample_rate
    n = int(round(seconds * sr))
    style = str(rng.choice(["sentences", "dialogue", "words"], p=[0.5, 0.3, 0.2]))
    speakers = [random_speaker(rng) for _ in range(1 if style != "dialogue" else
                                                   int(rng.integers(2, 4)))]
    if style == "dialogue" and rng.random() < 0.7:
        # Most dialogues are in one language.
        speakers = [dataclasses.replace(s, language=speakers[0].language) for s in speakers]
    items, estimate = [], 0.0
    while estimate < 1.6 * seconds + 1.0:
        speaker = speakers[len(items) % len(speakers)]
        text = (single_words(rng, speaker.language) if style == "words"
                else sentence(rng, speaker.language))
        items.append((text, speaker))
        # About 6 characters per word, rate in words per minute.
        estimate += len(text) / 6 * 60 / speaker.rate + 0.3
    out = np.zeros(n, np.float32)
    pos = int(rng.uniform(0, 0.4) * sr)
    for wave in renderer.render(items):
        wave = trim_silence(wave)
        if pos >= n:
            break
        m = min(len(wave), n - pos)
        out[pos: pos + m] = wave[:m]
        gap = rng.uniform(0.3, 1.0) if style == "words" else rng.uniform(0.05, 0.6)
        pos += m + int(gap * sr)
    return out, {"style": style, "voices": [s.voice for s in speakers]}
