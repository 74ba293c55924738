"""Offline datasets: collection with the behaviour policy, the HDF5 format and its checks, and
training windows (`collect`, `format`, `windows`, `cli`); see docs/guide/datasets.md."""
