"""Unit tests of the node plugin (driver/sscsi_driver)."""
