"""``macdmp bench``: every learned method on the scenario families, one leaderboard.

Built on the reproduction's machinery (:mod:`macdmp.reproduce`): the same units, result files,
resumable work list, executors (one process, packing on a GPU, Ray across machines) and
``--report-only``.

- :mod:`~macdmp.bench.scales`: the smoke, demo and paper settings of the benchmark;
- :mod:`~macdmp.bench.plan`: the methods, the units of each family (its dataset, every method
  at each training seed, the allocators and references) and the leaderboard's cells;
- :mod:`~macdmp.bench.leaderboard`: the table, the three answers per family, the heat map and
  the bar charts, ``report.md`` and ``answers.json``, from the result files alone.

docs/guide/bench.md describes it.
"""
