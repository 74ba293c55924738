"""The bottom layer: output files written safely, locks, signal handling, progress bars.

Everything else may import from here; nothing here imports the rest of the package.
"""
