"""Operator entry point (filled by the operator issue)."""

import sys


def main() -> int:
    print("secrets-store-csi-operator: not implemented yet", file=sys.stderr)
    return 2
