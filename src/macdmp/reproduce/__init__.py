"""``macdmp reproduce``: the paper's experiments (Figs. 3-9) as one resumable work list.

- :mod:`~macdmp.reproduce.scales`: smoke, demo and paper settings;
- :mod:`~macdmp.reproduce.plan`: the units of work (dataset, training runs, evaluations) with
  their keys and needs, and the figures they feed;
- :mod:`~macdmp.reproduce.units`: running one unit with the existing stages;
- :mod:`~macdmp.reproduce.worklist`: result files, what is left to do, the in-process and the
  Ray executors;
- :mod:`~macdmp.reproduce.figures` and :mod:`~macdmp.reproduce.report`: the figures, the
  verdicts and ``report.md``, from the result files alone.

docs/guide/reproducing.md describes it.
"""
