"""Offline tests of the static assets (assets/crds)."""
