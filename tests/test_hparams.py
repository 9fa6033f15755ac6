"""hparams.py: defaults, parsing, validation, presets, config round trip."""
import json

import pytest

import hparams as hp


def test_defaults_are_the_papers():
  h = hp.HParams()
  assert h.categories == ["bee", "bus"] and h.dec_rnn_size == 2048
  assert h.z_size == 128 and h.batch_size == 128 and h.num_mixture == 5
  assert h.num_sub == 2 and h.num_components == 10 and h.num_units == 5
  assert h.recurrent_dropout_prob == 0.9 and h.png_width == 48


def test_parse_original_string():
  h = hp.get_hparams("paper", "categories=[bee,bus,cat], dec_model=lstm, "
                     "num_mixture=8,use_recurrent_dropout=False,learning_rate=1e-4")
  assert h.categories == ["bee", "bus", "cat"]
  assert h.dec_model == "lstm" and h.num_mixture == 8
  assert h.use_recurrent_dropout is False and h.learning_rate == 1e-4


@pytest.mark.parametrize("text,needle", [
    ("foo=1", "unknown hparam 'foo'"),
    ("num_mixture=0", "num_mixture"),
    ("num_mixture=2.5", "num_mixture"),
    ("png_width=40", "png_width"),
    ("recurrent_dropout_prob=0", "recurrent_dropout_prob"),
    ("dec_model=gru", "dec_model"),
    ("categories=bee", "categories"),
    ("categories=[bee,,bus]", "categories"),
    ("categories=[bee,bus", "unbalanced"),
    ("use_input_dropout=maybe", "use_input_dropout"),
    ("z_size", "key=value"),
    ("conv_init=glorot", "conv_init"),
    ("on_miss=ignore", "on_miss"),
    ("eval_sketches=-1", "eval_sketches"),
    ("recurrence=cudnn", "recurrence"),
])
def test_bad_hparams_raise_one_clear_error(text, needle):
  with pytest.raises(hp.HParamsError) as e:
    hp.get_hparams("paper", text)
  assert needle in str(e.value) and "\n" not in str(e.value)


def test_presets_and_unknown_preset():
  small = hp.get_hparams("small")
  assert 256 <= small.dec_rnn_size <= 512 and small.batch_size == 64
  assert hp.get_hparams("small", "z_size=48").z_size == 48
  with pytest.raises(hp.HParamsError):
    hp.get_hparams("huge")


@pytest.mark.parametrize("name", sorted(hp.PRESETS))
def test_every_preset_is_valid(name):
  h = hp.get_hparams(name)
  assert h.validate() is h and h.categories


def test_real_preset_is_the_demos_on_the_real_sets():
  """README "The real preset": only the data differs from the demo's."""
  real, demo = hp.get_hparams("real"), hp.get_hparams("demo")
  differ = {k for k, v in real.to_dict().items() if getattr(demo, k) != v}
  assert differ == {"categories", "num_per_category"}
  assert real.categories == ["aaron_sheep", "omniglot", "kanji.rdp200"]
  assert real.num_per_category == 7400 and real.max_seq_len == -1
  assert real.num_components == real.num_units == 16


def test_config_round_trip_and_old_version(tmp_path, capsys):
  h = hp.get_hparams("small", "categories=[a,b],num_mixture=3")
  path = tmp_path / hp.CONFIG_NAME
  hp.save_config(str(path), h)
  assert hp.load_config(str(path)) == h
  data = json.loads(path.read_text())
  del data["eta"], data["hierarchy"]
  data["is_training"] = True           # a retired key, as older files hold
  path.write_text(json.dumps(data))
  old = hp.load_config(str(path))
  assert old.eta == 0.05 and old.hierarchy == "two_level"
  assert "eta" in capsys.readouterr().err
