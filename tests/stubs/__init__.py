"""Stand-ins for third-party packages that cannot be installed here (tests only)."""
