"""Reference provider plugin, behaving like the upstream e2e provider (`e2e-provider`)."""
