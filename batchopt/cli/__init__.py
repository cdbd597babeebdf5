"""Every command, progress and printing. Nothing imports this package."""
