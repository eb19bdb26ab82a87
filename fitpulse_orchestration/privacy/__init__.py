"""Health-data rules: health fields stay raw, 30-day raw retention, erasure on request."""
