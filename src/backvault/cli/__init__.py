"""The backvault command line."""
