"""The one error type for media that cannot be read."""


class MediaError(ValueError):
    """A media file is unreadable; the message starts with the file's path."""
