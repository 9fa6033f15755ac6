"""benchmarks/bench_buckets.no_padding_bound on numbers computed by hand."""
import pytest

from benchmarks.bench_buckets import no_padding_bound


def test_no_padding_bound_fits_a_line_through_the_two_variants():
  # step = 0.1 s + 4 ms per padded point, batch 64:
  # padded 250 -> 1.1 s, longest 150 -> 0.7 s, no padding (63) -> 0.352 s.
  res = dict(padded_sketches_per_s=64 / 1.1, longest_sketches_per_s=64 / 0.7,
             padded_mean_padded_len=250.0, longest_mean_padded_len=150.0,
             mean_length=63.0)
  out = no_padding_bound(res, 64)
  assert out["fixed_ms"] == pytest.approx(100.0)
  assert out["per_point_ms"] == pytest.approx(4.0)
  assert out["no_padding_bound_vs_padded"] == pytest.approx(1.1 / 0.352)
