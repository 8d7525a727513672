"""The one base class of the errors a user can act on.

The CLI prints these as one paragraph and exits with status 2, without a traceback: their
messages say what is wrong and what to change. Any other exception is a bug and keeps its
traceback.
"""

from __future__ import annotations


class LinkstyleError(Exception):
    """An expected failure (bad config, bad or missing file, full disk), phrased so the user can fix it."""
