"""Unit tests of the operator (operator/sscsi_operator)."""
