"""The corrupt command (see cvcurate.corrupt)."""
