"""Kubernetes access for the node plugin: a thin JSON REST client, node-filtered caches, writers."""
