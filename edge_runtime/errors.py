"""Errors the command line turns into one clear line and a non-zero exit."""

from edge_runtime.user_errors import UserError


class EdgeError(UserError):
    """Base of every error the user can fix (bad file, bad URI, missing library)."""


class ModelError(EdgeError):
    """The model file is missing, truncated, not a bundle, or built for another device."""


class SourceError(EdgeError):
    """The source URI cannot be understood or opened."""
