"""End-to-end tests of the block engine through the `stackvault` command line (issue 2, "Must hold")."""
