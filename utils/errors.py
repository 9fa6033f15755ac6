"""User-facing errors: one clear line, non-zero exit, no traceback.

Every mistake a user can make (a bad flag, a missing file, a malformed
hparams string, a corrupted npz, ...) is raised as :class:`UserError` with a
message that names the file / flag / value and says what was expected.  The
CLIs wrap their ``main`` with :func:`cli_main`, which prints ``error: <msg>``
to stderr and exits with status 2 instead of showing a traceback.
"""
import functools
import sys

EXIT_USER_ERROR = 2


class UserError(Exception):
  """A mistake in the user's input; printed as one line without a traceback."""


def cli_main(main):
  """Wraps an absl ``main(argv)`` so that UserError becomes a one-line exit 2."""

  @functools.wraps(main)
  def wrapped(argv):
    try:
      return main(argv)
    except UserError as e:
      sys.stderr.write(f"error: {e}\n")
      sys.stderr.flush()
      sys.exit(EXIT_USER_ERROR)
    except KeyboardInterrupt:
      sys.stderr.write("interrupted\n")
      sys.exit(130)

  return wrapped
