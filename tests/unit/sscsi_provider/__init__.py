"""Unit tests of the reference provider (provider/sscsi_provider)."""
