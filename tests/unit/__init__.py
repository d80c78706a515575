"""Unit tests, one directory per package or artefact they cover (sscsi_driver, sscsi_operator, ...)."""
