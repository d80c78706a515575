"""Generated protocol code: CSI (subset of csi.v1) and the provider API (v1alpha1).

Regenerate with `make proto`; `make lint` fails when these files are stale.
"""
