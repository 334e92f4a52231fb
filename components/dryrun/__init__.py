"""`talkalign dryrun`: every stage's step at the profile's real shapes on the meta device (no weights, no memory)."""
