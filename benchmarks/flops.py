"""Analytic FLOP counts of the train-step parts (benchmarks/bench_train.py's
docstring gives the formulas): matmul / conv multiply-adds x 2, forward."""


def gate_width(hps):
  """F: the fused gate columns of the decoder cell."""
  extra = 4 * hps.hyper_num_units if hps.dec_model == "hyper" else 0
  return 4 * hps.dec_rnn_size + extra


def lstm_fwd_flops(batch, steps, n_in, units):
  return steps * 2 * batch * (n_in + units) * 4 * units


def recurrence_fwd_flops(hps, batch, steps):
  """The per-step matmuls inside the loop (recurrent + hyper), all T steps."""
  h, f = hps.dec_rnn_size, gate_width(hps)
  per_step = 2 * batch * h * f
  if hps.dec_model == "hyper":
    nh, e = hps.hyper_num_units, hps.hyper_embedding_size
    per_step += 2 * batch * nh * 4 * nh + 2 * batch * nh * 12 * e \
        + 2 * batch * e * 12 * h
  return steps * per_step


def decoder_fwd_flops(hps, batch, steps):
  """Input projection + recurrence + init state + mixture head."""
  h, f = hps.dec_rnn_size, gate_width(hps)
  proj = steps * 2 * batch * 5 * f + 2 * batch * hps.z_size * f
  init = 2 * batch * hps.z_size * (2 * h + (2 * hps.hyper_num_units
                                            if hps.dec_model == "hyper" else 0))
  head = steps * 2 * batch * h * (3 + 6 * hps.num_output_mixture)
  return proj + recurrence_fwd_flops(hps, batch, steps) + init + head


def conv_fwd_flops(hps, batch):
  """(encoder, image decoder) convolutions and dense layers
  (model/networks/encoder.py, model/networks/image_decoder.py architecture), per batch."""
  w, d = hps.png_width, hps.z_size
  conv = lambda side, cin, cout: 2 * side * side * 9 * cin * cout
  enc = (3 * conv(w, 1, 32) + conv(w // 2, 32, 32) + 3 * conv(w // 2, 32, 64)
         + conv(w // 4, 64, 64) + conv(w // 8, 64, 128) + conv(w // 16, 128, 256)
         + 2 * 2 * (w // 16) ** 2 * 256 * d)
  # transposed conv: 2 * in_pixels * 9 * Cin * Cout
  dec = (2 * d * (w // 16) ** 2 * 256 + conv(w // 16, 256, 128)
         + conv(w // 8, 128, 64) + conv(w // 4, 64, 32) + conv(w // 2, 32, 1))
  return batch * enc, batch * dec
