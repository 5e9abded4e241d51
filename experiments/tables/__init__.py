"""Reproduction tables: one file per table (see docs/reproducing.md)."""
