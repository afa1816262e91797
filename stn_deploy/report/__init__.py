"""Reports: images, tables, plots (no torch)."""
