"""MA-CDMP: multi-agent conditional diffusion planning with mean-field communication for MF-TDMA."""

__version__ = "0.1.0"
