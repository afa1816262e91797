"""Small file helpers shared by every writer (no torch)."""
