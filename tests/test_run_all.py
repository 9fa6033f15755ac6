"""benchmarks/run_all.write_readme: only the section after the marker is
replaced; a README without the marker is refused and left as it was."""
import pytest

from benchmarks import run_all
from utils.errors import UserError


def test_write_readme_keeps_the_head_and_replaces_the_section(tmp_path):
  path = tmp_path / "README.md"
  head = "# Benchmarks\n\nhand-written text\n\n"
  path.write_text(head + run_all.MARKER + "\n\nold table\n")
  run_all.write_readme("new table", str(path))
  assert path.read_text() == head + run_all.MARKER + "\n\nnew table\n"
  assert [p.name for p in tmp_path.iterdir()] == ["README.md"]


def test_write_readme_refuses_a_file_without_the_marker(tmp_path):
  path = tmp_path / "README.md"
  path.write_text("someone else's notes\n")
  with pytest.raises(UserError, match="no line"):
    run_all.write_readme("table", str(path))
  assert path.read_text() == "someone else's notes\n"
