"""The C++ kernels build wherever a compiler is present.

Every kernel test skips when the library is not built, and the model then
silently runs TensorFlow ops (slower, same math), so a build that breaks on a
new CPU or compiler would otherwise show only in the benchmarks."""
import pytest

from model.fast import native_ops


@pytest.mark.skipif(native_ops._compiler() is None, reason="no C++ compiler")
def test_kernels_build_when_a_compiler_is_present(monkeypatch):
  monkeypatch.delenv("RPCL_CPU_KERNELS", raising=False)
  monkeypatch.setitem(native_ops._state, "tried", False)
  monkeypatch.setitem(native_ops._state, "module", None)
  monkeypatch.setitem(native_ops._state, "error", None)
  assert native_ops.kernels() is not None, native_ops.unavailable_reason()


def test_compile_flags_hold_only_options_the_compiler_knows():
  flags = native_ops.compile_flags()
  assert flags[:len(native_ops._CXXFLAGS)] == native_ops._CXXFLAGS
  cxx = native_ops._compiler()
  for flag in native_ops._OPTIONAL_OFF:
    assert (flag in flags) == bool(cxx and native_ops._accepts(cxx, flag))
  if cxx:
    assert not native_ops._accepts(cxx, "-mno-such-option-xyz")
