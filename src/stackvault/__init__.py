"""stackvault: block-level backup and restore of disk images and OpenStack servers."""

__version__ = "0.1.0"
