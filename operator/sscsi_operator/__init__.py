"""kopf operator that installs, configures, repairs and removes the driver."""
