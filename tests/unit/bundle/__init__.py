"""Offline tests of the OLM bundle, its CSV and RBAC, the plain install manifest and the alert rules."""
