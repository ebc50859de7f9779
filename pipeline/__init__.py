"""The LOCE reproduction workflow."""
