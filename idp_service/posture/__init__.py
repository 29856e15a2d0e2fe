"""Posture on the service: checks evaluated at ingest and at sign-in, exemptions, decisions."""
