"""End-to-end tests of the block engine through the `stackvault` command line (what it must hold)."""
