"""MA-CDMP: multi-agent conditional diffusion planning with mean-field communication for MF-TDMA.

The package is built in layers; a module imports only from its own layer and those below it
(``tests/test_layers.py`` checks every import), bottom to top:

1. ``common``: output files written safely, locks, signals, progress bars;
2. ``sim``: the network simulator, its scenarios and families, network seeds;
3. ``policies``: the policy interface, the allocators, running episodes and their QoS;
4. ``data``: offline datasets (collection, the HDF5 format, training windows, rewards);
5. ``diffusion``: backbones, noise schedules, the one sampler;
6. ``methods``: the method interface, configurations, the one trainer, checkpoints, run
   folders as policies, the parts learners share, training loggers, plugins;
7. ``planner`` (MA-CDMP) and ``baselines`` (the other methods), side by side;
8. ``eval``: the evaluation protocol, reports and plots;
9. ``reproduce``: the paper's experiments as one resumable work list;
10. ``bench``: every learned method on the scenario families, one leaderboard;
11. ``app``: the ``macdmp`` command, every subcommand and the demo.

The PettingZoo environment is ``macdmp.sim.env.parallel_env``.
"""

from macdmp.sim.config import PRESETS, ScenarioConfig, load_scenario
from macdmp.sim.core import BatchedNetworks

__version__ = "0.1.0"
__all__ = ["PRESETS", "BatchedNetworks", "ScenarioConfig", "load_scenario"]
