"""Typer commands. ``ffexport.cli.main:entry`` is the console script."""
