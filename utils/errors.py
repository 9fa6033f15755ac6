"""User-facing errors: one clear line, non-zero exit, no traceback.

Every mistake a user can make (a bad flag, a missing file, a malformed
hparams string, a corrupted npz, ...) is raised as :class:`UserError` with a
message that names the file / flag / value and says what was expected.  The
CLIs wrap their ``main`` with :func:`cli_main`, which prints ``error: <msg>``
to stderr and exits with status 2 instead of showing a traceback;
:func:`check_argv`, :func:`require_flags` and :func:`require_min` are their
common command-line checks (stray positional arguments, missing required
flags, numbers below their minimum).  :func:`parse_flags` is their absl
flags parser: an unknown flag or a value absl rejects (a word for an
integer, a choice not offered) is one line and exit 2 as well.
"""
import functools
import sys

from absl import flags as absl_flags

EXIT_USER_ERROR = 2


class UserError(Exception):
  """A mistake in the user's input; printed as one line without a traceback."""


def _exit_with(message):
  """Prints ``error: <message>`` to stderr and exits with status 2."""
  sys.stderr.write(f"error: {message}\n")
  sys.stderr.flush()
  sys.exit(EXIT_USER_ERROR)


def cli_main(main):
  """Wraps an absl ``main(argv)`` so that UserError becomes a one-line exit 2."""

  @functools.wraps(main)
  def wrapped(argv):
    try:
      return main(argv)
    except UserError as e:
      _exit_with(e)
    except KeyboardInterrupt:
      sys.stderr.write("interrupted\n")
      sys.exit(130)

  return wrapped


def parse_flags(argv):
  """The CLIs' absl ``flags_parser`` (given to ``app.run``): absl's
  parsing, with its errors as ``error: <msg>`` and exit 2 instead of its
  two-line "FATAL Flags parsing error" and exit 1."""
  try:
    return absl_flags.FLAGS(argv)
  except absl_flags.Error as e:
    _exit_with(e)


def check_argv(argv, hint="use --flag=value"):
  """Rejects the positional arguments absl leaves in ``argv[1:]`` (a value
  given without its ``--flag=``), naming them and saying what to write."""
  if len(argv) > 1:
    raise UserError(f"unexpected arguments {' '.join(argv[1:])}: {hint}")


def require_flags(flags, *names, hint=None):
  """Each flag of ``names`` must be set (non-empty) on the absl ``flags``
  object; the first one that is not is named, with ``hint`` after it."""
  for name in names:
    if not getattr(flags, name):
      raise UserError(f"--{name} is required" + (f": {hint}" if hint else ""))


def require_min(flags, minimum, *names):
  """Each numeric flag of ``names`` on the absl ``flags`` object must be
  ``>= minimum``; the first one that is not is named with its value."""
  for name in names:
    value = getattr(flags, name)
    if value < minimum:
      raise UserError(f"--{name} must be >= {minimum}, got {value}")
