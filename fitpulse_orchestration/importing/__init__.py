"""Importers of external logs and catalogs into the landing zone's formats."""
