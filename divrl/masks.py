"""Placeholder; filled by the objective library work (issue 3)."""
