"""The one exception type for errors a user can cause (bad file, bad config, bad label)."""


class TaglessError(ValueError):
    """A user-facing error with a one-line message; the CLI prints it without a traceback."""
