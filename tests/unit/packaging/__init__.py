"""The distributions: one per layer directory, and the meta-package with its extras."""
