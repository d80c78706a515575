"""`kubectl secrets-store`: the diagnostics CLI of the Secrets Store CSI Driver (doctor, status)."""
