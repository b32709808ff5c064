"""Small helpers every stage shares: errors, atomic writes, type checks, seeds, threads, devices,
progress. Imports nothing else of graftsearch."""

