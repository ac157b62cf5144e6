import json

import pytest

from msss_tf.config import CONFIG_FILENAME, LOSS_NAMES, MSSSConfig


def test_defaults_follow_the_paper():
    c = MSSSConfig()
    assert (c.stft_window, c.stft_hop, c.fft_length, c.n_mels) == (400, 160, 512, 64)
    assert (c.mel_fmin, c.mel_fmax) == (60.0, 7800.0)
    assert c.segment_frames == 96 and c.segment_samples == 15600
    assert c.losses == LOSS_NAMES
    assert c.lambda_frame == c.lambda_pitch == 1.0 and c.frame_tau == 0
    assert (c.pitch_ratio_min, c.pitch_ratio_max) == (0.8, 1.2)
    assert c.similarity == "bilinear" and c.learning_rate == 1e-4 and c.batch_size == 1024


def test_json_round_trip(tmp_path):
    c = MSSSConfig(losses=("clip", "pitch"), similarity="cosine", frame_tau=2, batch_size=8)
    assert MSSSConfig.from_json(c.to_json()) == c
    path = c.save(str(tmp_path))
    assert path.endswith(CONFIG_FILENAME)
    assert MSSSConfig.load(str(tmp_path)) == c
    assert json.loads(open(path).read())["losses"] == ["clip", "pitch"]


def test_needs_shifted_view():
    assert MSSSConfig(losses=("clip",)).needs_shifted_view is False
    assert MSSSConfig(losses=("clip", "pitch")).needs_shifted_view is True
    assert MSSSConfig(losses=("clip", "frame")).needs_shifted_view is True
    assert MSSSConfig(losses=("clip", "frame"), frame_positives="self").needs_shifted_view is False


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"losses": ()}, "losses"),
        ({"losses": ("clip", "bogus")}, "losses"),
        ({"losses": ("clip", "clip")}, "losses"),
        ({"fft_length": 500}, "fft_length"),
        ({"fft_length": 256}, "fft_length"),
        ({"mel_fmax": 9000.0}, "mel_fmax"),
        ({"segment_frames": 16}, "segment_frames"),
        ({"similarity": "dot"}, "similarity"),
        ({"temperature": 0.0}, "temperature"),
        ({"frequency_pooling": "median"}, "frequency_pooling"),
        ({"pitch_ratio_min": 1.2, "pitch_ratio_max": 0.8}, "pitch_ratio_min"),
        ({"pitch_ratio_min": 1.0, "pitch_ratio_max": 1.0}, "pitch_ratio_max"),
        ({"lambda_frame": 0.0}, "lambda_frame"),
        ({"frame_tau": -1}, "frame_tau"),
        ({"batch_size": 1}, "batch_size"),
        ({"learning_rate": -1.0}, "learning_rate"),
        ({"pitch_target": "cents"}, "pitch_target"),
        ({"warmup_steps": -1}, "warmup_steps"),
        ({"warmup_steps": 2.5}, "warmup_steps"),
    ],
)
def test_contradictions_name_the_field(changes, field):
    with pytest.raises(ValueError, match=f"MSSSConfig.{field}"):
        MSSSConfig(**changes)


def test_off_loss_weights_are_free():
    # A weight of 0 is only a contradiction when that loss is on.
    MSSSConfig(losses=("clip",), lambda_frame=0.0, lambda_pitch=0.0)
    MSSSConfig(losses=("clip", "frame"), pitch_ratio_min=1.0, pitch_ratio_max=1.0)


def test_unknown_field_and_bad_file(tmp_path):
    with pytest.raises(ValueError, match="unknown field"):
        MSSSConfig.from_dict({"bogus": 1})
    bad = tmp_path / CONFIG_FILENAME
    bad.write_text("{not json")
    with pytest.raises(ValueError, match=str(bad)):
        MSSSConfig.load(str(tmp_path))
    with pytest.raises(FileNotFoundError):
        MSSSConfig.load(str(tmp_path / "missing"))


@pytest.mark.parametrize("field, value, expected", [
    ("log_offset", "abc", "a number"),
    ("log_offset", float("nan"), "a finite number"),
    ("learning_rate", None, "a number"),
    ("batch_size", "8", "an integer"),
    ("batch_size", 2.5, "an integer"),
    ("segment_frames", True, "an integer"),
    ("log_compress", "yes", "true or false"),
    ("similarity", 3, "a string"),
    ("losses", "clip", "a list of loss names"),
    ("losses", 5, "a list of loss names"),
])
def test_every_field_type_is_checked_with_a_message_naming_it(field, value, expected):
    with pytest.raises(ValueError) as caught:
        MSSSConfig.from_dict({field: value})
    message = str(caught.value)
    assert message.startswith(f"MSSSConfig.{field}={value!r}: must be {expected}"), message
    assert f"got a {type(value).__name__}" in message and "default" in message


def test_numbers_from_json_and_numpy_become_python_numbers():
    import numpy as np

    config = MSSSConfig.from_dict({"batch_size": np.int64(8), "segment_frames": 96.0,
                                   "log_offset": np.float32(0.5), "log_compress": np.bool_(0)})
    assert (config.batch_size, config.segment_frames, config.log_compress) == (8, 96, False)
    assert type(config.batch_size) is int and type(config.log_offset) is float
    assert MSSSConfig.from_json(config.to_json()) == config
    with pytest.raises(ValueError, match="expected an object of fields"):
        MSSSConfig.from_json("[1, 2]")


def test_cli_set_with_a_bad_value_names_the_field(capsys):
    from msss_tf import cli

    assert cli.main(["msss-tf", "pretrain", "--model_dir=never/written",
                     "--set=log_offset=abc"]) == 2
    err = capsys.readouterr().err
    assert "error: MSSSConfig.log_offset='abc': must be a number, got a str" in err
    assert "not supported between" not in err
