"""Unit tests, one directory per package or artefact they cover (sscsi_driver, sscsi_operator, bundle, ...).

Every directory here is a package (it has an `__init__.py`), so module names may repeat across
directories (sscsi_operator/test_main.py, sscsi_cli/test_main.py) and shared helpers are imported by
their full name, `from unit.sscsi_driver.fakes import ...` (pytest's `pythonpath = ["tests"]`); shared
fixtures live in the directory's conftest.py. A test module never imports another test module.
"""
