"""The kubectl secrets-store CLI (doctor, status) on recorded cluster objects."""
