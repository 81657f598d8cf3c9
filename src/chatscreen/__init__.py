"""chatscreen: self-hosted real-time text chat and screen sharing."""

__version__ = "0.1.0"
