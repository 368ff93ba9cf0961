"""sessiongate: a multi-user gateway that keeps each end user's AI chat isolated."""

__version__ = "0.1.0"

__all__ = ["__version__"]
